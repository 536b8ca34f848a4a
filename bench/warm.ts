/**
 * The warm pool's figures for `npm run bench`: create → running with a pool of 4 (creates spaced so the
 * pool refills between them), and the full cycle a client pays (create, Playwright connect, navigate,
 * delete), against a router and agent of their own on the bench's Redis.
 */
import { chromium } from 'playwright-core';
import type { Spawned } from '../harness/spawn.js';
import { spawnRouterAndAgent } from './pair.js';
import { stats, type Stats } from './load.js';

export const WARM_POOL = 4;
const POLL_MS = Number(process.env.POLL ?? 20);
const PAGE_URL = 'http://bench.bso.test/';
const PAGE = '<!doctype html><title>bench</title><p>ok</p>';

export type WarmFigures = { createToRunning: Stats; cycleMedianMs: number; handOff: Stats; hits: number; claims: number };

export async function benchWarmPool(opts: {
  redisUrl: string;
  routerEnv: Record<string, string>;
  token: string;
  auth: Record<string, string>;
  creates: number;
  cycles: number;
  handOffs: number;
}): Promise<WarmFigures> {
  const procs: Spawned[] = [];
  try {
    // One slot: creates are sequential here, and the queue's hand-off needs a full router.
    const { routerUrl, metricsPort } = await spawnRouterAndAgent({
      ...opts,
      keyPrefix: '{bso-warm}:',
      maxSessions: 1,
      nodeName: 'bench-warm',
      agentEnv: { WARM_POOL_SIZE: String(WARM_POOL) },
      procs,
    });
    const metric = async (name: string) => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return Number(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    };
    const poolFull = async () => {
      for (const end = performance.now() + 60_000; performance.now() < end;) {
        if ((await metric('browser_warm_pool_idle')) >= WARM_POOL) return;
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
      throw new Error('the warm pool did not refill within 60 s');
    };
    const headers = { ...opts.auth, 'content-type': 'application/json' };
    const create = async () => {
      const res = await fetch(`${routerUrl}/sessions?wait=true`, { method: 'POST', headers, body: '{}' });
      const s = (await res.json()) as { id: string; status: string; cdpUrl: string };
      if (s.status !== 'running') throw new Error(`session ${s.id} is ${s.status}`);
      return s;
    };
    const remove = (id: string) => fetch(`${routerUrl}/sessions/${id}`, { method: 'DELETE', headers: opts.auth });

    // One create first, not counted: a fresh router's first request pays for compiling its path (~40 ms here).
    await poolFull();
    await remove((await create()).id);
    const samples: number[] = [];
    for (let i = 0; i < opts.creates; i++) {
      await poolFull();
      const t = performance.now();
      const s = await create();
      samples.push(performance.now() - t);
      await remove(s.id);
    }
    const cycles: number[] = [];
    for (let i = 0; i < opts.cycles; i++) {
      await poolFull();
      const t = performance.now();
      const s = await create();
      const browser = await chromium.connectOverCDP(s.cdpUrl);
      const context = browser.contexts()[0]!;
      const page = context.pages()[0] ?? (await context.newPage());
      // Browsers never reach this host's loopback (the agent's firewall): the page is served by the client
      // over CDP (Fetch.fulfillRequest), a real navigation with two more round trips than a network answer.
      await page.route(PAGE_URL, (route) => route.fulfill({ contentType: 'text/html', body: PAGE }));
      await page.goto(PAGE_URL);
      await remove(s.id);
      cycles.push(performance.now() - t);
      await browser.close().catch(() => {});
    }
    // The queue's hand-off: a waiter at the head of the queue, the one slot freed (the holder's `endedAt`),
    // the waiter's session running (its `startedAt`).
    const handOffs: number[] = [];
    for (let i = 0; i < opts.handOffs; i++) {
      await poolFull();
      const holder = await create();
      const waiting = fetch(`${routerUrl}/sessions?queue=30`, { method: 'POST', headers: { ...headers, accept: 'application/x-ndjson' }, body: '{}' });
      const res = await waiting;
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      let text = '';
      // Its first line says it is in the queue.
      while (!text.includes('\n')) text += decoder.decode((await reader.read()).value, { stream: true });
      if (!text.startsWith('{"queue":')) throw new Error(`the waiter was not queued: ${text}`);
      const ended = (await (await remove(holder.id)).json()) as { endedAt: number };
      for (;;) {
        const { done, value } = await reader.read();
        if (value) text += decoder.decode(value, { stream: true });
        if (done || text.includes('"session"') || text.includes('"error"')) break;
      }
      const last = JSON.parse(text.trim().split('\n').at(-1)!) as { session?: { id: string; status: string; startedAt: number } };
      if (last.session?.status !== 'running') throw new Error(`the waiter did not get a running session: ${text}`);
      // Both stamped by the router's clock: the holder's end released the slot; the waiter's start.
      handOffs.push(last.session.startedAt - ended.endedAt);
      await reader.cancel().catch(() => {});
      await remove(last.session.id);
    }
    const hits = await metric('browser_warm_pool_claims_total{outcome="hit"}');
    const misses = await metric('browser_warm_pool_claims_total{outcome="miss"}');
    cycles.sort((a, b) => a - b);
    return { createToRunning: stats(samples), cycleMedianMs: cycles[Math.floor(cycles.length / 2)]!, handOff: stats(handOffs), hits, claims: hits + misses };
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
  }
}
