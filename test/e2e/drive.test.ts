import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import type { LocalChromiumRuntime } from '../../agent/runtime/local.js';
import { openTestPage, PAGES_ORIGIN, serveTestPages, serveTestPagesPuppeteer } from '../helpers/pages.js';
import WebSocket from 'ws';
import { groupMembers } from '../../agent/runtime/devtools.js';
import { isAlive, pidsMatching, startRedis, type RedisServer } from '../../harness/processes.js';
import { json, startSystem, waitFor, type TestSystem } from '../../harness/system.js';

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47];

// The Node router with both stores and both WebSocket proxy modes (raw splice, its default; message by
// message), and the Workers router in miniflare (Upstash over real Redis, Durable Object hub).
for (const [storeKind, wsMode, runtime] of [
  ['memory', 'messages', 'node'],
  ['redis', 'splice', 'node'],
  ['upstash', 'messages', 'edge'],
] as const) {
  describe(`end to end: ${runtime} router, ${storeKind} store, ${wsMode} WebSocket proxy`, () => {
    let sys: TestSystem;
    let redis: RedisServer | undefined;

    beforeAll(async () => {
      if (storeKind === 'redis') redis = await startRedis();
      sys = await startSystem({ runtime, routerEnv: { WS_PROXY_MODE: wsMode, ...(redis ? { REDIS_URL: redis.url } : {}) } });
    });
    afterAll(async () => {
      await sys?.close();
      await redis?.stop();
      expect(await pidsMatching('bso-chromium-')).toEqual([]);
    });

    const create = async (body: object = {}) => {
      const { status, body: s } = await json<SessionView>(
        sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
      );
      expect(status).toBe(201);
      expect(s.status).toBe('running');
      return s;
    };
    const localRuntime = () => sys.agents[0]!.runtime as LocalChromiumRuntime;
    const agentMetric = async (name: string) => {
      const text = await (await fetch(sys.agents[0]!.metricsUrl)).text();
      return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    };

    it('Playwright: create → connectOverCDP → page → evaluate → screenshot → DELETE leaves nothing', async () => {
      const s = await create({ options: { viewport: { width: 1024, height: 700 } } });
      // The URL alone opens the session: it carries the session's token (owner key id, expiry, signature).
      expect(s.cdpUrl).toMatch(new RegExp(`^ws://${new URL(sys.url).host}/sessions/${s.id}/proxy/~env-user\\.\\d+\\.[\\w-]{43}/devtools/browser$`));
      const pid = localRuntime().pidOf(s.id)!;
      expect(isAlive(pid)).toBe(true);

      const browser = await chromium.connectOverCDP(s.cdpUrl);
      const context = browser.contexts()[0] ?? (await browser.newContext());
      await serveTestPages(context);
      const page = await context.newPage();
      await page.goto(`${PAGES_ORIGIN}/`);
      expect(await page.evaluate(() => (window as unknown as { answer: number }).answer)).toBe(42);
      expect(await page.textContent('#greeting')).toBe('Hello from the test');
      const png = await page.screenshot();
      expect([...png.subarray(0, 4)]).toEqual(PNG_MAGIC);
      expect(png.byteLength).toBeGreaterThan(1000);
      await browser.close();

      const status = await json(sys.fetch(`${sys.url}/sessions/${s.id}/status`));
      expect(status.body).toMatchObject({ id: s.id, status: 'running', health: { agentConnected: true } });

      // The browser is a process group (zygotes, renderers, utility processes): all of it is gone
      // by the time DELETE answers.
      expect((await groupMembers(pid)).length).toBeGreaterThan(2);
      const del = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }));
      expect(del.status).toBe(200);
      expect(del.body.status).toBe('terminated');
      expect(await groupMembers(pid)).toEqual([]);
      expect(isAlive(pid)).toBe(false);
      expect(await pidsMatching('bso-chromium-')).toEqual([]);
      expect((await json(sys.fetch(`${sys.url}/sessions/${s.id}/status`))).body).toMatchObject({ status: 'terminated' });
      // Idempotent.
      expect((await json(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }))).body).toMatchObject({ status: 'terminated' });
    });

    it('options: the known ones reach the page (user agent, locale, time zone); free-form ones are stored and returned as sent, never launch flags', async () => {
      const options = {
        userAgent: 'bso-options-test/2.0',
        locale: 'de-DE',
        timezone: 'Asia/Tokyo',
        customOption: 'value',
        args: ['--user-agent=from-args'],
        nested: { a: [1, 'two', null, true] },
      };
      const s = await create({ timeout: 3600, options });
      expect(s.options).toEqual(options);
      expect((await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`))).body.options).toEqual(options);
      try {
        const { browser, page } = await openTestPage(s.cdpUrl);
        expect(await page.evaluate(() => [navigator.userAgent, navigator.language, Intl.DateTimeFormat().resolvedOptions().timeZone])).toEqual([
          options.userAgent,
          'de-DE',
          'Asia/Tokyo',
        ]);
        await browser.close();
      } finally {
        await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
      }
    });

    it('Puppeteer: browserWSEndpoint = cdpUrl, same journey', async () => {
      const s = await create();
      const pid = localRuntime().pidOf(s.id)!;
      const browser = await puppeteer.connect({ browserWSEndpoint: s.cdpUrl, protocolTimeout: 20_000 });
      const page = await browser.newPage();
      await serveTestPagesPuppeteer(page);
      await page.goto(`${PAGES_ORIGIN}/`);
      expect(await page.evaluate(() => document.title)).toBe('bso test page');
      const shot = await page.screenshot();
      expect([...shot.subarray(0, 4)]).toEqual(PNG_MAGIC);
      await browser.disconnect();
      const del = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }));
      expect(del.body.status).toBe('terminated');
      expect(isAlive(pid)).toBe(false);
    });

    it('Puppeteer: browser.close() ends the session as terminated (closed by the client), not failed', async () => {
      const failedBefore = await agentMetric('browser_sessions_failed_total');
      const s = await create();
      const pid = localRuntime().pidOf(s.id)!;
      const browser = await puppeteer.connect({ browserWSEndpoint: s.cdpUrl, protocolTimeout: 20_000 });
      const page = await browser.newPage();
      await serveTestPagesPuppeteer(page);
      await page.goto(`${PAGES_ORIGIN}/`);
      await browser.close();
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/sessions/${s.id}/status`))).body.status !== 'running', 10_000, 'session ended');
      const after = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`));
      expect(after.body).toMatchObject({ status: 'terminated', failureReason: 'closed by the client' });
      expect(await agentMetric('browser_sessions_failed_total')).toBe(failedBefore);
      await waitFor(async () => !isAlive(pid) && (await groupMembers(pid)).length === 0, 5000, 'browser gone');
    });

    it('Playwright over the HTTP endpoint: /json/version is rewritten to the router', async () => {
      const s = await create();
      const version = await json<{ webSocketDebuggerUrl: string }>(fetch(`${s.proxyUrl}/json/version`));
      expect(version.body.webSocketDebuggerUrl).toMatch(
        new RegExp(`^ws://${new URL(sys.url).host}/sessions/${s.id}/proxy/~env-user\\.\\d+\\.[\\w-]{43}/devtools/browser/[0-9a-f-]+$`),
      );
      const list = await json<Array<{ webSocketDebuggerUrl: string }>>(fetch(`${s.proxyUrl}/json/list`));
      for (const t of list.body) expect(t.webSocketDebuggerUrl).toContain(`${new URL(s.proxyUrl).pathname}/devtools/page/`);
      const browser = await chromium.connectOverCDP(s.proxyUrl);
      const page = await (browser.contexts()[0] ?? (await browser.newContext())).newPage();
      expect(await page.evaluate(() => 2 ** 10)).toBe(1024);
      await browser.close();
      await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    });

    it('the runtime-neutral fetch path (what Workers use) proxies and rewrites the same way', async () => {
      const s = await create();
      // On Node, call the Hono app directly (not the Node fast path); on Workers it is the only path.
      const viaFetch = (req: Request) => (sys.router ? sys.router.app.fetch(req) : fetch(req));
      const res = await viaFetch(new Request(`${s.proxyUrl}/json/version`));
      expect(res.status).toBe(200);
      const version = (await res.json()) as { webSocketDebuggerUrl: string };
      expect(version.webSocketDebuggerUrl).toContain(`${new URL(s.proxyUrl).pathname}/devtools/browser/`);
      const opened = await viaFetch(new Request(`${s.proxyUrl}/json/new?about:blank`, { method: 'PUT' }));
      expect(opened.status).toBe(200);
      expect(((await opened.json()) as { webSocketDebuggerUrl: string }).webSocketDebuggerUrl).toContain(`${new URL(s.proxyUrl).pathname}/devtools/page/`);
      await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    });

    it('a browser that crashes marks its session failed with a reason, and the profile is removed', async () => {
      const s = await create();
      const pid = localRuntime().pidOf(s.id)!;
      const dir = (await pidsMatching('bso-chromium-')).length;
      expect(dir).toBeGreaterThan(0);
      // A client with an open CDP socket hears 1011 (the documented code for a browser that crashed).
      const cdp = new WebSocket(s.cdpUrl);
      await new Promise((resolve, reject) => cdp.once('open', resolve).once('error', reject));
      const closed = new Promise<number>((resolve) => cdp.once('close', (code) => resolve(code)));
      process.kill(-pid, 'SIGKILL');
      expect(await closed).toBe(1011);
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/sessions/${s.id}/status`))).body.status === 'failed', 10_000, 'failed status');
      const after = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`));
      expect(after.body.failureReason).toBe('the browser was killed (SIGKILL)');
      await waitFor(async () => (await pidsMatching('bso-chromium-')).length === 0, 5000, 'no chromium left');
      const proxied = await json(fetch(`${s.proxyUrl}/json/version`));
      expect(proxied.status).toBe(409);
      expect(proxied.body.error.code).toBe('SESSION_NOT_RUNNING');
      expect(existsSync(`/proc/${pid}`)).toBe(false);
    });

    it('lists sessions with a status filter and a cursor', async () => {
      const a = await create();
      const b = await create();
      await sys.fetch(`${sys.url}/sessions/${a.id}`, { method: 'DELETE' });
      const running = await json<{ items: SessionView[] }>(sys.fetch(`${sys.url}/sessions?status=running`));
      expect(running.body.items.map((x) => x.id)).toContain(b.id);
      expect(running.body.items.map((x) => x.id)).not.toContain(a.id);
      const page1 = await json<{ items: SessionView[]; nextCursor: string | null }>(sys.fetch(`${sys.url}/sessions?limit=1`));
      expect(page1.body.items).toHaveLength(1);
      expect(page1.body.nextCursor).not.toBeNull();
      const page2 = await json<{ items: SessionView[] }>(sys.fetch(`${sys.url}/sessions?limit=1&cursor=${encodeURIComponent(page1.body.nextCursor!)}`));
      expect(page2.body.items[0]!.id).not.toBe(page1.body.items[0]!.id);
      await sys.fetch(`${sys.url}/sessions/${b.id}`, { method: 'DELETE' });
    });
  });
}
