import { readFileSync, rmSync } from 'node:fs';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import puppeteer from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { startAgent, type RunningAgent } from '../../agent/main.js';
import type { SessionView } from '../../shared/api.js';
import { startEdgeRouter } from '../../harness/edge.js';
import { PAGES_ORIGIN, serveTestPages, serveTestPagesPuppeteer } from '../helpers/pages.js';
import { criDefaultConnect, renderedDocs } from '../helpers/public-pages.js';
import { CHROMIUM, isAlive, pidsMatching, requireBinary, startRedis, type RedisServer } from '../../harness/processes.js';
import { spawnEntry } from '../../harness/spawn.js';
import { bearer, json, KEYED_ROUTER_ENV, keyedFetch, TEST_KEYS, TEST_METRICS_TOKEN, TEST_TOKEN, waitFor } from '../../harness/system.js';

const api = keyedFetch(TEST_KEYS.user);
import { startUpstashRest } from '../../harness/upstash-rest.js';
import type { LocalChromiumRuntime } from '../../agent/runtime/local.js';

describe('the router on the Workers runtime (miniflare/workerd), Upstash over real Redis', () => {
  let redis: RedisServer;
  let rest: Awaited<ReturnType<typeof startUpstashRest>>;
  let edge: Awaited<ReturnType<typeof startEdgeRouter>>;
  let agent: RunningAgent;

  beforeAll(async () => {
    requireBinary(CHROMIUM, 'install the Debian package chromium');
    redis = await startRedis();
    rest = await startUpstashRest(redis.url, 'edge-rest-token');
    edge = await startEdgeRouter({
      bindings: {
        AGENT_TOKEN: TEST_TOKEN,
        ...KEYED_ROUTER_ENV,
        UPSTASH_REDIS_REST_URL: rest.url,
        UPSTASH_REDIS_REST_TOKEN: 'edge-rest-token',
        MAX_SESSIONS: '2',
        LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
      },
    });
    agent = await startAgent(
      loadAgentConfig(
        { ROUTER_URL: edge.url, AGENT_TOKEN: TEST_TOKEN, NODE_NAME: 'edge-node', METRICS_PORT: '0', CHROMIUM_PATH: CHROMIUM, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent' },
        process.getuid?.() === 0,
      ),
    );
    await waitFor(async () => (await json(api(`${edge.url}/health`))).body.agents?.length === 1, 15_000, 'agent on the edge');
  }, 120_000);

  afterAll(async () => {
    await agent?.close();
    await edge?.close();
    await rest?.close();
    await redis?.stop();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  const create = async () => {
    const res = await json<SessionView>(api(`${edge.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
    expect(res.status).toBe(201);
    expect(res.body.status).toBe('running');
    return res.body;
  };

  it('a raw CDP socket gets every reply, in order, then the close the browser sent', async () => {
    const s = await create();
    const ws = new WebSocket(s.cdpUrl);
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    const got: Array<{ id: number }> = [];
    ws.on('message', (d) => got.push(JSON.parse(d.toString())));
    const closed = new Promise<[number, string]>((r) => ws.once('close', (c, why) => r([c, why.toString()])));
    for (let id = 1; id <= 20; id++) ws.send(JSON.stringify({ id, method: 'Browser.getVersion' }));
    await waitFor(() => got.length === 20, 5000, 'replies');
    ws.send(JSON.stringify({ id: 21, method: 'Browser.close' }));
    expect(await closed).toEqual([1000, '']);
    expect(got.map((m) => m.id)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
    await api(`${edge.url}/sessions/${s.id}`, { method: 'DELETE' });
  });

  it('Playwright through Worker → Durable Object → agent → Chromium, then DELETE leaves nothing', async () => {
    const s = await create();
    const pid = (agent.runtime as LocalChromiumRuntime).pidOf(s.id)!;
    const browser = await chromium.connectOverCDP(s.cdpUrl);
    const context = browser.contexts()[0] ?? (await browser.newContext());
    await serveTestPages(context);
    const page = await context.newPage();
    await page.goto(`${PAGES_ORIGIN}/`);
    expect(await page.evaluate(() => (window as unknown as { answer: number }).answer)).toBe(42);
    const png = await page.screenshot();
    expect(png.byteLength).toBeGreaterThan(1000);
    await browser.close();
    const version = await json(fetch(`${s.proxyUrl}/json/version`));
    expect(version.body.webSocketDebuggerUrl).toContain(`${new URL(s.proxyUrl).pathname}/devtools/browser/`);
    const status = await json(api(`${edge.url}/sessions/${s.id}/status`));
    expect(status.body).toMatchObject({ status: 'running', health: { agentConnected: true } });
    const del = await json<SessionView>(api(`${edge.url}/sessions/${s.id}`, { method: 'DELETE' }));
    expect(del.body.status).toBe('terminated');
    expect(isAlive(pid)).toBe(false);
  });

  it('the queue and release through the Worker: a queued create streams its place and takes the slot a release frees', async () => {
    const [a, b] = [await create(), await create()];
    const res = await api(`${edge.url}/sessions?queue=60`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' }, body: '{}' });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!text.includes('\n')) text += decoder.decode((await reader.read()).value, { stream: true });
    expect(JSON.parse(text.split('\n')[0]!)).toEqual({ queue: { position: 1 } });
    // No client is connected to it: released, it ends at once, and its slot goes to the waiter.
    const released = await json<SessionView>(api(`${edge.url}/sessions/${a.id}/release`, { method: 'POST' }));
    expect(released.body).toMatchObject({ id: a.id, status: 'terminated' });
    for (;;) {
      const { done, value } = await reader.read();
      if (value) text += decoder.decode(value, { stream: true });
      if (done) break;
    }
    const last = JSON.parse(text.trim().split('\n').at(-1)!) as { session: SessionView };
    expect(last.session.status).toBe('running');
    for (const id of [b.id, last.session.id]) expect((await json(api(`${edge.url}/sessions/${id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
  });

  it('Puppeteer through the Worker', async () => {
    const s = await create();
    const browser = await puppeteer.connect({ browserWSEndpoint: s.cdpUrl, protocolTimeout: 20_000 });
    const page = await browser.newPage();
    await serveTestPagesPuppeteer(page);
    await page.goto(`${PAGES_ORIGIN}/`);
    expect(await page.evaluate(() => document.title)).toBe('bso test page');
    await browser.disconnect();
    expect((await json(api(`${edge.url}/sessions/${s.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
  });

  it("chrome-remote-interface's plain connect finds /json/protocol at the Worker's root, and /docs renders from the bundle alone", async () => {
    const s = await create();
    expect(await criDefaultConnect(s.cdpUrl)).toMatch(/^(Headless)?Chrome\//);
    expect((await json(api(`${edge.url}/sessions/${s.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    const docs = await renderedDocs(edge.url);
    expect(docs.offRouter).toEqual([]);
    expect(docs.failed).toEqual([]);
    expect(docs.paths).toEqual(expect.arrayContaining(['/sessions', '/sessions/{id}', '/sessions/{id}/status', '/health']));
  });

  it('an agent whose tunnel drops reconnects to its hub, and its running session keeps working', async () => {
    const s = await create();
    agent.tunnel.disconnect();
    await waitFor(async () => (await fetch(`${s.proxyUrl}/json/version`)).status === 200 && (await json(api(`${edge.url}/health`))).body.agents.length === 1, 15_000, 'reconnect');
    const status = await json(api(`${edge.url}/sessions/${s.id}/status`));
    expect(status.body).toMatchObject({ status: 'running', health: { agentConnected: true } });
    const browser = await chromium.connectOverCDP(s.cdpUrl);
    expect(browser.contexts().length).toBeGreaterThan(0);
    await browser.close();
    expect((await json(api(`${edge.url}/sessions/${s.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
  });

  it('answers bad input with the same errors as the Node router', async () => {
    const post = (body: string) => json(api(`${edge.url}/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }));
    expect(await post('{"timeout":')).toMatchObject({ status: 400, body: { error: { code: 'INVALID_JSON' } } });
    expect(await post('{"timeout":"soon"}')).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION_FAILED' } } });
    expect(await post('{"flags":[]}')).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION_FAILED' } } });
    expect(await json(api(`${edge.url}/sessions/00000000-0000-4000-8000-000000000000`))).toMatchObject({ status: 404, body: { error: { code: 'SESSION_NOT_FOUND' } } });
    expect(await post('{"cluster":"nowhere"}')).toMatchObject({ status: 503, body: { error: { code: 'NO_AGENT' } } });
    const wrong = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${edge.url.replace('http', 'ws')}/agent/connect?cluster=local`, { headers: { authorization: 'Bearer nope' } });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('error', () => {});
    });
    expect(wrong).toBe(401);
    // A hello for another cluster than the one the URL named is refused.
    const mismatch = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`${edge.url.replace('http', 'ws')}/agent/connect?cluster=local`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
      ws.on('open', () => ws.send(JSON.stringify({ t: 'hello', v: 1, clusterId: 'other', nodeName: 'n', agentId: 'a', runtime: 'local' })));
      ws.on('close', (code) => resolve(code));
      ws.on('error', () => {});
    });
    expect(mismatch).toBe(4004);
    const metrics = await (await fetch(`${edge.url}/metrics`, { headers: bearer(TEST_METRICS_TOKEN) })).text();
    expect(metrics).toMatch(/bso_agents_connected 1/);
    // The fleet's session metrics from the shared store: every session this suite created so far, none pending.
    const created = Number(/^browser_sessions_total\{cluster="local"\} (\d+)$/m.exec(metrics)?.[1]);
    expect(created).toBeGreaterThanOrEqual(5);
    expect(metrics).toMatch(/^browser_sessions_pending\{cluster="local"\} 0$/m);
  });
});

describe('the Workers router reaps on Durable Object alarms when the agent is gone', () => {
  let redis: RedisServer;
  let rest: Awaited<ReturnType<typeof startUpstashRest>>;
  let edge: Awaited<ReturnType<typeof startEdgeRouter>>;

  beforeAll(async () => {
    redis = await startRedis();
    rest = await startUpstashRest(redis.url, 'edge-rest-token');
    edge = await startEdgeRouter({
      bindings: {
        AGENT_TOKEN: TEST_TOKEN,
        ...KEYED_ROUTER_ENV,
        UPSTASH_REDIS_REST_URL: rest.url,
        UPSTASH_REDIS_REST_TOKEN: 'edge-rest-token',
        EDGE_ALARM_INTERVAL_MS: '500',
        LOG_LEVEL: 'silent',
      },
    });
  }, 60_000);

  afterAll(async () => {
    await edge?.close();
    await rest?.close();
    await redis?.stop();
  });

  it('a session whose agent died without a word is timed out at its deadline by the hub', async () => {
    const profiles = new Set<string>();
    const agentProc = spawnEntry('agent/main.ts', {
      ROUTER_URL: edge.url,
      AGENT_TOKEN: TEST_TOKEN,
      NODE_NAME: 'doomed',
      METRICS_PORT: '0',
      CHROMIUM_PATH: CHROMIUM,
      LOG_LEVEL: 'info',
    });
    try {
      await agentProc.waitForLine(/tunnel connected/);
      const res = await json<SessionView>(
        api(`${edge.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ timeout: 5 }) }),
      );
      expect(res.body.status).toBe('running');
      const browsers = await pidsMatching('bso-chromium-');
      for (const pid of browsers) {
        const dir = /--user-data-dir=(\S+)/.exec(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' '))?.[1];
        if (dir) profiles.add(dir);
      }
      // SIGKILL: the agent gets no chance to stop its browser or report anything.
      process.kill(-agentProc.proc.pid!, 'SIGKILL');
      for (const pid of browsers) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // not a group leader; the group leader's kill takes it
        }
      }
      await waitFor(async () => (await json(api(`${edge.url}/sessions/${res.body.id}`))).body.status === 'timed_out', 20_000, 'hub reaper');
    } finally {
      await agentProc.stop();
      // The killed agent could not remove its browser's profile; the test does.
      for (const dir of profiles) rmSync(dir, { recursive: true, force: true });
    }
  });
});
