import { createServer } from 'node:net';
import { chromium } from 'playwright-core';
import { DEFAULT_METRICS_PORT } from '../../agent/config.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import { CHROMIUM, pidsMatching, requireBinary, startRedis, type RedisServer } from '../../harness/processes.js';
import { runEntry, spawnEntry, type Spawned } from '../../harness/spawn.js';
import { json, keyedFetch, spawnReplicas, TEST_KEYS, TEST_TOKEN, waitFor } from '../../harness/system.js';

const jsonPost = (who: typeof fetch, url: string, body: object) => who(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('rate limits and quotas across two router processes sharing one Redis', () => {
  let redis: RedisServer;
  const procs: Spawned[] = [];
  const routers: string[] = [];
  const as = { user: keyedFetch(TEST_KEYS.user), other: keyedFetch(TEST_KEYS.other), admin: keyedFetch(TEST_KEYS.admin) };

  beforeAll(async () => {
    requireBinary(CHROMIUM, 'install the Debian package chromium');
    redis = await startRedis();
    // One create every 3 s, 3 at once (a wide margin for a loaded machine); 5 unauthenticated requests per address; one session per key.
    const replicas = await spawnReplicas({
      redisUrl: redis.url,
      count: 2,
      routerEnv: { RATE_LIMIT_CREATE: '20/min,burst=3', RATE_LIMIT_API: '6000/min,burst=1000', RATE_LIMIT_UNAUTHENTICATED: '30/min,burst=5', MAX_SESSIONS_PER_KEY: '1' },
    });
    procs.push(...replicas.procs);
    routers.push(...replicas.urls);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await redis?.stop();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  it('a burst of creates on both routers passes exactly the configured burst; the rest get 429 with Retry-After; the bucket refills at the rate', async () => {
    // A cluster with no agent: what passes the limiter answers 503 NO_AGENT, cheaply.
    const burst = await Promise.all(Array.from({ length: 10 }, (_, i) => jsonPost(as.user, `${routers[i % 2]}/sessions`, { cluster: 'nowhere' })));
    const passed = burst.filter((r) => r.status === 503);
    const limited = burst.filter((r) => r.status === 429);
    expect([passed.length, limited.length]).toEqual([3, 7]);
    let wait = 0;
    for (const r of limited) {
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('RATE_LIMITED');
      const retryAfter = Number(r.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      // One interval (3 s), rounded up: a request whose router read the clock a moment before the
      // other router's charge landed sees 3 s and a few ms, which is 4.
      expect(retryAfter).toBeLessThanOrEqual(4);
      expect(r.headers.get('ratelimit-policy')).toContain('"create";q=20;w=60');
      expect(r.headers.get('ratelimit')).toMatch(/"create";r=0;t=\d+/);
      wait = Math.max(wait, retryAfter);
    }
    // Waiting what Retry-After said lets exactly one more through, on either router.
    await new Promise((r) => setTimeout(r, wait * 1000 + 100));
    expect((await jsonPost(as.user, `${routers[1]}/sessions`, { cluster: 'nowhere' })).status).toBe(503);
    expect((await jsonPost(as.user, `${routers[0]}/sessions`, { cluster: 'nowhere' })).status).toBe(429);
    // Other keys have buckets of their own.
    expect((await jsonPost(as.other, `${routers[0]}/sessions`, { cluster: 'nowhere' })).status).toBe(503);
  });

  it('MAX_SESSIONS_PER_KEY holds each key to its quota, on every router, with Retry-After', async () => {
    const mine = await json<SessionView>(jsonPost(as.admin, `${routers[0]}/sessions?wait=true`, {}));
    expect(mine.status).toBe(201);
    for (const url of routers) {
      const again = await jsonPost(as.admin, `${url}/sessions`, {});
      expect(again.status).toBe(429);
      expect(Number(again.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(((await again.json()) as { error: { code: string; details: unknown } }).error).toMatchObject({ code: 'QUOTA_EXCEEDED', details: { maxSessionsPerKey: 1, active: 1 } });
    }
    // The other key's quota is its own (its create bucket may need its 3 s first: the test before used it).
    let theirs = { status: 0, body: {} as SessionView };
    await waitFor(async () => (theirs = await json<SessionView>(jsonPost(as.other, `${routers[0]}/sessions?wait=true`, {}))).status !== 429, 10_000, 'create bucket refilled');
    expect(theirs.status).toBe(201);
    for (const [who, s] of [
      [as.admin, mine.body],
      [as.other, theirs.body],
    ] as const) {
      expect((await json(who(`${routers[0]}/sessions/${s.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    }
    // A freed slot is free on every router at once (refused creates cost create tokens too: wait for one).
    let next = { status: 0, body: {} as SessionView & { error?: { code: string } } };
    await waitFor(async () => (next = await json(jsonPost(as.admin, `${routers[1]}/sessions?wait=true`, {}))).body.error?.code !== 'RATE_LIMITED', 10_000, 'a create token');
    expect(next.status).toBe(201);
    expect((await json(as.admin(`${routers[1]}/sessions/${next.body.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
  });

  it('unauthenticated requests share one bucket per address across routers; responses carry RateLimit fields', async () => {
    const tries = await Promise.all(Array.from({ length: 12 }, (_, i) => fetch(`${routers[i % 2]}/sessions`, { headers: { 'x-api-key': 'guess-0123456789abcdefghijklmn' } })));
    expect(tries.filter((r) => r.status === 401)).toHaveLength(5);
    const limited = tries.filter((r) => r.status === 429);
    expect(limited).toHaveLength(7);
    for (const r of limited) expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    const ok = await as.user(`${routers[1]}/sessions`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('ratelimit-policy')).toBe('"api";q=6000;w=60');
    expect(ok.headers.get('ratelimit')).toMatch(/^"api";r=\d+;t=\d+$/);
  });
});

describe('secure by default', () => {
  it('the Node router refuses to listen beyond loopback without keys, and starts with AUTH_MODE=none', async () => {
    const refused = await runEntry('router/node.ts', { PORT: '0', HOST: '0.0.0.0', AGENT_TOKEN: TEST_TOKEN });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/refusing to listen on 0\.0\.0\.0 without API keys.*API_KEYS.*AUTH_MODE=none/s);
    const open = spawnEntry('router/node.ts', { PORT: '0', HOST: '0.0.0.0', AGENT_TOKEN: TEST_TOKEN, AUTH_MODE: 'none' });
    try {
      await open.waitForLine(/AUTH_MODE=none: every request is accepted without a key/);
      const url = JSON.parse(open.lines.find((l) => /router listening/.test(l))!).url as string;
      expect((await fetch(`${url}/sessions`)).status).toBe(200);
    } finally {
      await open.stop();
    }
  });

  it('`npm start` with nothing configured listens on loopback and serves curl and Playwright without a key; a taken metrics port is no failure', async () => {
    // The default metrics port, held (by this test, or by whatever already holds it): as a second `npm start` finds it.
    const holder = createServer();
    await new Promise<void>((resolve) => holder.once('error', () => resolve()).listen(DEFAULT_METRICS_PORT, '127.0.0.1', resolve));
    const start = spawnEntry('scripts/start.ts', { PORT: '0', CHROMIUM_PATH: CHROMIUM, LOG_LEVEL: 'info' });
    try {
      await start.waitForLine(/tunnel connected/, 30_000);
      const moved = start.lines.map((l) => new RegExp(`metrics port ${DEFAULT_METRICS_PORT} is taken .*serving metrics on port (\\d+)`).exec(l)?.[1]).find(Boolean);
      expect(moved, start.lines.join('\n')).toMatch(/^\d+$/);
      expect((await fetch(`http://127.0.0.1:${moved}/livez`)).status).toBe(200);
      const listening = JSON.parse(start.lines.find((l) => /router listening/.test(l))!) as { url: string; auth: string };
      expect(listening).toMatchObject({ auth: 'none', url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/) });
      expect(start.lines.some((l) => /no API key configured: listening on 127\.0\.0\.1 only/.test(l))).toBe(true);
      const created = await json<SessionView>(fetch(`${listening.url}/sessions?wait=true`, { method: 'POST' }));
      expect([created.status, created.body.status]).toEqual([201, 'running']);
      expect(created.body.cdpUrl).toBe(`${listening.url.replace('http', 'ws')}/sessions/${created.body.id}/proxy/devtools/browser`);
      const browser = await chromium.connectOverCDP(created.body.cdpUrl);
      const page = await (browser.contexts()[0] ?? (await browser.newContext())).newPage();
      expect(await page.evaluate(() => navigator.userAgent)).toContain('Chrome');
      await browser.close();
      expect((await json(fetch(`${listening.url}/sessions/${created.body.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    } finally {
      await start.stop();
      holder.close();
    }
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });
});
