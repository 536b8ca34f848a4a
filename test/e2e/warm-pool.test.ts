import { chromium, type Browser } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { startAgent, type RunningAgent } from '../../agent/main.js';
import type { LocalChromiumRuntime } from '../../agent/runtime/local.js';
import type { SessionView } from '../../shared/api.js';
import { requestOnce, startBalancer, type Balancer } from '../../harness/balancer.js';
import { CHROMIUM, isAlive, pidsMatching, requireBinary, startRedis, type RedisServer } from '../../harness/processes.js';
import type { Spawned } from '../../harness/spawn.js';
import { bearer, json, spawnRouter, startSystem, TEST_KEYS, TEST_TOKEN, waitFor, type TestSystem } from '../../harness/system.js';
import { PAGES_ORIGIN, serveTestPages } from '../helpers/pages.js';

const key = bearer(TEST_KEYS.user);
const POOL = 4;

const metric = async (agent: RunningAgent, name: string): Promise<number> => {
  const text = await (await fetch(agent.metricsUrl)).text();
  const escaped = name.replace(/[{}"]/g, (c) => `\\${c}`);
  return Number(new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
};
const poolOf = (agent: RunningAgent) => (agent.runtime as LocalChromiumRuntime).warmPool()!;
const pidOf = (agent: RunningAgent, id: string) => (agent.runtime as LocalChromiumRuntime).pidOf(id)!;

describe('a warm pool of fresh browsers', () => {
  const browsers: Browser[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  afterAll(async () => {
    await Promise.all(browsers.splice(0).map((b) => b.close().catch(() => {})));
    for (const c of cleanups.splice(0).reverse()) await c();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });
  const connect = async (cdpUrl: string) => {
    const browser = await chromium.connectOverCDP(cdpUrl, { timeout: 30_000 });
    browsers.push(browser);
    return browser;
  };

  it('50 concurrent creates on two router replicas against a pool of 4: no browser serves twice, every session is fresh, the pool refills', async () => {
    requireBinary(CHROMIUM, 'install the Debian package chromium');
    const redis: RedisServer = await startRedis();
    cleanups.push(() => redis.stop());
    const routers: Array<{ proc: Spawned; url: string; port: number }> = [];
    const balancer: Balancer = await startBalancer(() => routers.map((r) => ({ host: '127.0.0.1', port: r.port })));
    cleanups.push(() => balancer.close());
    for (const id of ['pool-a', 'pool-b']) {
      const r = await spawnRouter(redis.url, { PUBLIC_URL: balancer.url, REPLICA_ID: id, MAX_SESSIONS: '10', MAX_SESSIONS_PER_KEY: '50' });
      routers.push(r);
      cleanups.push(() => r.proc.stop());
    }
    const agent = await startAgent(
      loadAgentConfig(
        {
          ROUTER_URL: balancer.url,
          AGENT_TOKEN: TEST_TOKEN,
          NODE_NAME: 'pool-node',
          METRICS_PORT: '0',
          METRICS_HOST: '127.0.0.1',
          CHROMIUM_PATH: CHROMIUM,
          LOG_LEVEL: 'warn',
          LOCAL_MAX_BROWSERS: '16',
          WARM_POOL_SIZE: String(POOL),
        },
        process.getuid?.() === 0,
      ),
    );
    cleanups.push(() => agent.close());
    await waitFor(() => agent.tunnel.replicas.length === 2, 30_000, 'a tunnel to each replica');
    await waitFor(() => poolOf(agent).idle === POOL, 60_000, 'the pool filled');

    const create = (i: number, body: object = {}) =>
      requestOnce(`${routers[i % 2]!.url}/sessions?wait=true&waitTimeout=60`, {
        method: 'POST',
        headers: { ...key, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        timeoutMs: 90_000,
      });
    const remove = (id: string) => requestOnce(`${balancer.url}/sessions/${id}`, { method: 'DELETE', headers: key });

    // A session that leaves everything a browser can keep: cookies, storage, history.
    const dirty = (await create(0)).body as SessionView;
    const dirtyPid = pidOf(agent, dirty.id);
    const b = await connect(dirty.cdpUrl);
    await serveTestPages(b.contexts()[0]!);
    const page = await b.contexts()[0]!.newPage();
    await page.goto(`${PAGES_ORIGIN}/`);
    await page.evaluate(() => {
      document.cookie = 'left=behind; max-age=3600';
      localStorage.setItem('left', 'behind');
    });
    await page.goto(`${PAGES_ORIGIN}/second`);
    await b.close();
    expect((await remove(dirty.id)).body.status).toBe('terminated');
    await waitFor(() => poolOf(agent).idle === POOL, 60_000, 'the pool refilled');

    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => create(i)));
    const created = answers.filter((a) => a.status === 201).map((a) => a.body as SessionView);
    expect(created.length).toBe(10);
    expect(answers.filter((a) => a.status === 429).every((a) => (a.body as { error: { code: string } }).error.code === 'CAPACITY_EXHAUSTED')).toBe(true);
    expect(created.every((s) => s.status === 'running')).toBe(true);
    const pids = created.map((s) => pidOf(agent, s.id));
    expect(new Set([...pids, dirtyPid]).size, 'each session its own browser').toBe(11);
    expect(await metric(agent, 'browser_warm_pool_claims_total{outcome="hit"}')).toBeGreaterThanOrEqual(POOL + 1);
    expect((await metric(agent, 'browser_warm_pool_claims_total{outcome="hit"}')) + (await metric(agent, 'browser_warm_pool_claims_total{outcome="miss"}'))).toBe(11);

    for (const s of created) {
      const browser = await connect(s.cdpUrl);
      const context = browser.contexts()[0]!;
      expect(await context.cookies(), 'no cookie of an earlier session').toEqual([]);
      const fresh = context.pages();
      expect(fresh.map((p) => p.url())).toEqual(['about:blank']);
      const cdp = await context.newCDPSession(fresh[0]!);
      const history = (await cdp.send('Page.getNavigationHistory')) as { entries: unknown[] };
      expect(history.entries).toHaveLength(1);
      await serveTestPages(context);
      await fresh[0]!.goto(`${PAGES_ORIGIN}/`);
      expect(await fresh[0]!.evaluate(() => [localStorage.length, document.cookie])).toEqual([0, '']);
      await browser.close();
    }
    await Promise.all(created.map((s) => remove(s.id)));
    await waitFor(() => poolOf(agent).idle === POOL, 60_000, 'the pool refilled after the burst');
    for (const pid of [dirtyPid, ...pids]) expect(isAlive(pid), `browser ${pid} of an ended session`).toBe(false);
    // The next tests count this machine's browsers: this system goes now (afterAll, if an assertion failed first).
    for (const c of cleanups.splice(0).reverse()) await c();
  }, 300_000);

  describe('on one node', () => {
    let sys: TestSystem;
    const CAPACITY = 3;
    const MAX_IDLE_SEC = 6;
    it('options given at claim time take effect: user agent, viewport, language and time zone as a page sees them', async () => {
      sys = await startSystem({ agentEnv: { WARM_POOL_SIZE: String(CAPACITY), LOCAL_MAX_BROWSERS: String(CAPACITY), WARM_POOL_MAX_IDLE: String(MAX_IDLE_SEC) } });
      cleanups.push(() => sys.close());
      const agent = sys.agents[0]!;
      await waitFor(() => poolOf(agent).idle === CAPACITY, 60_000, 'the pool filled');
      const options = { userAgent: 'bso-warm/1.0', viewport: { width: 1111, height: 777 }, locale: 'de-DE', timezone: 'Asia/Tokyo' };
      const created = await json<SessionView>(
        sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ options }) }),
      );
      expect(created.body.status).toBe('running');
      expect(await metric(agent, 'browser_warm_pool_claims_total{outcome="hit"}')).toBe(1);
      const browser = await connect(created.body.cdpUrl);
      const context = browser.contexts()[0]!;
      const seen = (p: import('playwright-core').Page) =>
        p.evaluate(() => [navigator.userAgent, innerWidth, innerHeight, navigator.language, Intl.DateTimeFormat().resolvedOptions().timeZone]);
      const want = ['bso-warm/1.0', 1111, 777, 'de-DE', 'Asia/Tokyo'];
      // The page that was open when the session claimed the browser, and one opened afterwards.
      expect(await seen(context.pages()[0]!)).toEqual(want);
      const opened = await context.newPage();
      expect(await seen(opened)).toEqual(want);
      await serveTestPages(context);
      let acceptLanguage = '';
      await context.route(`${PAGES_ORIGIN}/lang`, (route) => {
        acceptLanguage = route.request().headers()['accept-language'] ?? '';
        return route.fulfill({ body: 'ok' });
      });
      await opened.goto(`${PAGES_ORIGIN}/lang`);
      expect(acceptLanguage).toMatch(/^de-DE/);
      await browser.close();
      await sys.fetch(`${sys.url}/sessions/${created.body.id}`, { method: 'DELETE' });
    }, 120_000);

    it('the pool never holds more than the node has room for, gives way to sessions, and replaces browsers idle past WARM_POOL_MAX_IDLE', async () => {
      const agent = sys.agents[0]!;
      await waitFor(() => poolOf(agent).idle === CAPACITY, 60_000, 'the pool filled');
      // Browsers, not their helper processes (renderers, zygotes: `--type=…`).
      const chromiumMains = async () => (await pidsMatching('--remote-debugging-pipe', '--type=')).length;
      const sessions: SessionView[] = [];
      for (let i = 0; i < CAPACITY; i++) {
        const s = await json<SessionView>(sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
        expect(s.body.status).toBe('running');
        sessions.push(s.body);
      }
      // Every slot holds a session: nothing is left for warm browsers.
      await new Promise((r) => setTimeout(r, 1500));
      expect(poolOf(agent).held).toBe(0);
      expect(await chromiumMains()).toBeLessThanOrEqual(CAPACITY);
      await sys.fetch(`${sys.url}/sessions/${sessions[0]!.id}`, { method: 'DELETE' });
      await waitFor(() => poolOf(agent).idle === 1, 30_000, 'one warm browser in the freed slot');
      expect(await chromiumMains()).toBeLessThanOrEqual(CAPACITY);
      for (const s of sessions.slice(1)) await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
      await waitFor(() => poolOf(agent).idle === CAPACITY, 60_000, 'the pool filled again');

      const reapedBefore = await metric(agent, 'browser_warm_pool_reaped_total');
      await waitFor(async () => (await metric(agent, 'browser_warm_pool_reaped_total')) >= reapedBefore + CAPACITY, (MAX_IDLE_SEC + 30) * 1000, 'idle browsers reaped');
      await waitFor(() => poolOf(agent).idle === CAPACITY, 60_000, 'the reaped browsers replaced');
      await sys.close();
      expect(await pidsMatching('bso-chromium-'), 'warm browsers end with their agent').toEqual([]);
    }, 180_000);
  });
});
