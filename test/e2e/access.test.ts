import { request as httpRequest } from 'node:http';
import WebSocket from 'ws';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionTokens } from '../../router/auth/session-token.js';
import type { SessionView } from '../../shared/api.js';
import type { Session } from '../../shared/session.js';
import { pidsMatching, startRedis, type RedisServer } from '../../harness/processes.js';
import { runEntry } from '../../harness/spawn.js';
import { bearer, json, keyedFetch, startSystem, TEST_KEYS, TEST_METRICS_TOKEN, TEST_SESSION_SECRET, type TestSystem } from '../../harness/system.js';

const ALLOWED_ORIGIN = 'https://app.example';

/** The status a WebSocket handshake got: 101 when it opened (then closed again), else the HTTP error. */
function wsStatus(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.on('open', () => {
      ws.close();
      resolve({ status: 101, body: '' });
    });
    ws.on('error', (err) => {
      if (!/Unexpected server response/.test(err.message)) reject(err);
    });
  });
}

const expect401 = (res: { status: number; body: any }) => {
  expect(res.status).toBe(401);
  expect(res.body).toEqual({ error: { code: 'UNAUTHORIZED', message: expect.any(String) } });
};

for (const runtime of ['node', 'edge'] as const)
  describe(`access control (${runtime} router)`, () => {
    let redis: RedisServer | undefined;
    let sys: TestSystem;
    const as = { user: keyedFetch(TEST_KEYS.user), other: keyedFetch(TEST_KEYS.other), admin: keyedFetch(TEST_KEYS.admin) };
    const wsBase = () => sys.url.replace(/^http/, 'ws');
    const create = async (who: typeof fetch) => {
      const res = await json<SessionView>(who(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
      expect(res.status).toBe(201);
      expect(res.body.status).toBe('running');
      return res.body;
    };
    const tokenOf = (s: SessionView) => /\/proxy\/~([^/]+)$/.exec(s.proxyUrl)![1]!;

    beforeAll(async () => {
      if (runtime === 'node') redis = await startRedis();
      sys = await startSystem({
        runtime,
        // Stored keys are looked up every time, so a revocation shows at once.
        routerEnv: { API_KEY_CACHE_MS: '0', ALLOWED_ORIGINS: ALLOWED_ORIGIN, RATE_LIMIT_UNAUTHENTICATED: '40/hour,burst=40', ...(redis ? { REDIS_URL: redis.url } : {}) },
      });
    }, 120_000);
    afterAll(async () => {
      await sys?.close();
      await redis?.stop();
      expect(await pidsMatching('bso-chromium-')).toEqual([]);
    });

    it('every route but liveness, readiness and the API description needs a key', async () => {
      const id = '00000000-0000-4000-8000-000000000000';
      const routes: Array<[string, string]> = [
        ['POST', '/sessions'],
        ['GET', '/sessions'],
        ['GET', `/sessions/${id}`],
        ['GET', `/sessions/${id}/status`],
        ['DELETE', `/sessions/${id}`],
        ['GET', `/sessions/${id}/proxy/json/version`],
        ['GET', '/health'],
        ['GET', '/metrics'],
      ];
      for (const [method, path] of routes) {
        expect401(await json(fetch(`${sys.url}${path}`, { method })));
        expect401(await json(fetch(`${sys.url}${path}`, { method, headers: bearer('wrong-key-0123456789abcdef0123') })));
        expect401(await json(fetch(`${sys.url}${path}`, { method, headers: { 'x-api-key': 'wrong-key-0123456789abcdef0123' } })));
      }
      expect((await wsStatus(`${wsBase()}/sessions/${id}/proxy/devtools/browser`)).status).toBe(401);
      // The key is accepted in either header.
      expect((await fetch(`${sys.url}/sessions`, { headers: bearer(TEST_KEYS.user) })).status).toBe(200);
      expect((await fetch(`${sys.url}/sessions`, { headers: { 'x-api-key': TEST_KEYS.user } })).status).toBe(200);
      for (const open of ['/livez', '/readyz', '/openapi.json', '/docs']) expect((await fetch(`${sys.url}${open}`)).status).toBe(200);
      const doc = await json(fetch(`${sys.url}/openapi.json`));
      expect(Object.keys(doc.body.components.securitySchemes).sort()).toEqual(['apiKeyHeader', 'bearerAuth', 'sessionToken']);
      expect(doc.body.security).toEqual([{ bearerAuth: [] }, { apiKeyHeader: [] }]);
      expect(doc.body.paths['/livez'].get.security).toEqual([]);
    });

    it('/metrics takes METRICS_TOKEN or an admin key, not a user key', async () => {
      const scraped = await fetch(`${sys.url}/metrics`, { headers: bearer(TEST_METRICS_TOKEN) });
      expect(scraped.status).toBe(200);
      expect(scraped.headers.get('content-type')).toContain('text/plain');
      expect((await fetch(`${sys.url}/metrics`, { headers: bearer(TEST_KEYS.admin) })).status).toBe(200);
      expect401(await json(fetch(`${sys.url}/metrics`, { headers: bearer(TEST_KEYS.user) })));
    });

    it('keys made with `npm run keys` work until revoked, and are listed without the key', async () => {
      const env = { REDIS_URL: sys.redisUrl! };
      const made = await runEntry('scripts/keys.ts', env, ['create', '--name', `ci-${runtime}`]);
      expect(made.code).toBe(0);
      const created = JSON.parse(made.stdout) as { id: string; key: string; role: string };
      expect(created.role).toBe('user');
      expect((await fetch(`${sys.url}/sessions`, { headers: bearer(created.key) })).status).toBe(200);
      const listed = await runEntry('scripts/keys.ts', env, ['list']);
      expect(listed.stdout).toContain(created.id);
      expect(listed.stdout).not.toContain(created.key);
      expect((await runEntry('scripts/keys.ts', env, ['revoke', created.id])).code).toBe(0);
      expect401(await json(fetch(`${sys.url}/sessions`, { headers: bearer(created.key) })));
      expect((await runEntry('scripts/keys.ts', env, ['revoke', created.id])).code).toBe(2);
      expect((await runEntry('scripts/keys.ts', env, ['create', '--name', 'bad name'])).code).toBe(2);
    });

    it('another key cannot see, use or end a session (404, as if absent); an admin can', async () => {
      const mine = await create(as.user);
      expect(mine.owner).toBe('env-user');
      const plain = `/sessions/${mine.id}`;
      for (const path of [plain, `${plain}/status`, `${plain}/proxy/json/version`]) {
        const res = await json(as.other(`${sys.url}${path}`));
        expect([res.status, res.body.error?.code]).toEqual([404, 'SESSION_NOT_FOUND']);
      }
      expect((await json(as.other(`${sys.url}${plain}`, { method: 'DELETE' }))).status).toBe(404);
      const ws = await wsStatus(`${wsBase()}${plain}/proxy/devtools/browser`, bearer(TEST_KEYS.other));
      expect([ws.status, JSON.parse(ws.body).error.code]).toEqual([404, 'SESSION_NOT_FOUND']);
      expect((await json<{ items: SessionView[] }>(as.other(`${sys.url}/sessions`))).body.items.map((s) => s.id)).not.toContain(mine.id);
      expect((await json<{ items: SessionView[] }>(as.user(`${sys.url}/sessions`))).body.items.map((s) => s.id)).toContain(mine.id);
      // The session is untouched by all that.
      expect((await json(as.user(`${sys.url}${plain}/status`))).body.status).toBe('running');
      // The owner's key opens the proxy too (no token), and the URLs it hands out carry the token.
      const version = await json<{ webSocketDebuggerUrl: string }>(as.user(`${sys.url}${plain}/proxy/json/version`));
      expect(version.body.webSocketDebuggerUrl).toContain(`/proxy/~${tokenOf(mine)}/devtools/browser/`);
      expect((await wsStatus(version.body.webSocketDebuggerUrl)).status).toBe(101);
      // An admin sees everyone's sessions and may end them.
      expect((await json(as.admin(`${sys.url}${plain}/status`))).status).toBe(200);
      expect((await json<{ items: SessionView[] }>(as.admin(`${sys.url}/sessions`))).body.items.map((s) => s.id)).toContain(mine.id);
      expect((await json<SessionView>(as.admin(`${sys.url}${plain}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    });

    it('a session token opens its own session only, unaltered and unexpired, and only while it runs', async () => {
      const a = await create(as.user);
      const b = await create(as.other);
      const tokenA = tokenOf(a);
      // The URLs alone work, with no header: Playwright on cdpUrl (Puppeteer: drive.test.ts).
      const browser = await chromium.connectOverCDP(a.cdpUrl);
      const page = await (browser.contexts()[0] ?? (await browser.newContext())).newPage();
      expect(await page.evaluate(() => 6 * 7)).toBe(42);
      await browser.close();
      expect((await fetch(`${a.proxyUrl}/json/version`)).status).toBe(200);
      expect((await fetch(`${sys.url}/sessions/${a.id}/proxy/json/version?token=${tokenA}`)).status).toBe(200);
      // A's token on B's session; a tampered, a forged-owner and an expired token: all refused before any store read.
      const [owner, exp, sig] = tokenA.split('.') as [string, string, string];
      const tampered = `${owner}.${exp}.${sig.slice(0, -2)}${sig.endsWith('AA') ? 'BB' : 'AA'}`;
      const expired = await new SessionTokens([TEST_SESSION_SECRET]).mint({ ...(a as unknown as Session), owner: 'env-user', expiresAt: Date.now() - 1000 });
      for (const [id, token] of [
        [b.id, tokenA],
        [a.id, tampered],
        [a.id, `env-other.${exp}.${sig}`],
        [a.id, expired],
      ]) {
        expect401(await json(fetch(`${sys.url}/sessions/${id}/proxy/~${token}/json/version`)));
        expect((await wsStatus(`${wsBase()}/sessions/${id}/proxy/~${token}/devtools/browser`)).status).toBe(401);
      }
      // A token does not work as an API key.
      expect401(await json(fetch(`${sys.url}/sessions/${a.id}`, { headers: bearer(tokenA) })));
      await as.user(`${sys.url}/sessions/${a.id}`, { method: 'DELETE' });
      const after = await json(fetch(`${a.proxyUrl}/json/version`));
      expect([after.status, after.body.error.code]).toEqual([409, 'SESSION_NOT_RUNNING']);
      expect((await wsStatus(a.cdpUrl)).status).toBe(409);
      await as.other(`${sys.url}/sessions/${b.id}`, { method: 'DELETE' });
    });

    it('a WebSocket or a state-changing request from a foreign Origin is refused with 403; allowed origins and clients without Origin pass', async () => {
      const s = await create(as.user);
      const evil = await wsStatus(s.cdpUrl, { origin: 'https://evil.example' });
      expect([evil.status, JSON.parse(evil.body).error.code]).toEqual([403, 'FORBIDDEN_ORIGIN']);
      expect((await wsStatus(s.cdpUrl, { origin: ALLOWED_ORIGIN })).status).toBe(101);
      expect((await wsStatus(s.cdpUrl)).status).toBe(101);
      const post = await json(as.user(`${sys.url}/sessions`, { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'application/json' }, body: '{}' }));
      expect([post.status, post.body.error.code]).toEqual([403, 'FORBIDDEN_ORIGIN']);
      expect((await json(as.user(`${sys.url}/sessions/${s.id}`, { method: 'DELETE', headers: { origin: 'https://evil.example' } }))).status).toBe(403);
      expect((await json(as.user(`${sys.url}/sessions/${s.id}/status`))).body.status).toBe('running');
      // Reading is not state-changing; the allowed origin gets CORS headers for it.
      const read = await as.user(`${sys.url}/sessions/${s.id}`, { headers: { origin: ALLOWED_ORIGIN } });
      expect([read.status, read.headers.get('access-control-allow-origin')]).toEqual([200, ALLOWED_ORIGIN]);
      // A create with a body must say it is JSON (a cross-site form post cannot).
      for (const type of ['text/plain', 'application/x-www-form-urlencoded']) {
        const res = await json(as.user(`${sys.url}/sessions`, { method: 'POST', headers: { 'content-type': type }, body: '{}' }));
        expect([res.status, res.body.error.code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
      }
      await as.user(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    });

    it('a forged X-Forwarded-Host (and on Node a forged Host) never appears in cdpUrl', async () => {
      const s = await json<{ items: SessionView[] }>(as.user(`${sys.url}/sessions?limit=1`, { headers: { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' } }));
      expect(s.status).toBe(200);
      const created = await create(as.user);
      const viaForged = await json<SessionView>(as.user(`${sys.url}/sessions/${created.id}`, { headers: { 'x-forwarded-host': 'evil.example' } }));
      expect(viaForged.body.cdpUrl.startsWith(`${wsBase()}/`)).toBe(true);
      if (runtime === 'node') {
        const body = await new Promise<string>((resolve, reject) => {
          const req = httpRequest(`${sys.url}/sessions/${created.id}`, { headers: { host: 'evil.example', ...bearer(TEST_KEYS.user) } }, (res) => {
            let text = '';
            res.on('data', (d: Buffer) => (text += d.toString()));
            res.on('end', () => resolve(text));
          });
          req.on('error', reject);
          req.end();
        });
        const view = JSON.parse(body) as SessionView;
        expect(view.cdpUrl).not.toContain('evil.example');
        expect(view.cdpUrl.startsWith(`${wsBase()}/`)).toBe(true);
      }
      await as.user(`${sys.url}/sessions/${created.id}`, { method: 'DELETE' });
    });

    it('unauthenticated requests are throttled per address (so guessing keys is), keyed requests are not', async () => {
      const tries = await Promise.all(Array.from({ length: 60 }, () => fetch(`${sys.url}/sessions`, { headers: bearer('guess-0123456789abcdefghijklmn') })));
      const statuses = tries.map((r) => r.status);
      expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(40);
      const limited = tries.filter((r) => r.status === 429);
      expect(limited.length).toBeGreaterThanOrEqual(20);
      expect(statuses.every((s) => s === 401 || s === 429)).toBe(true);
      for (const r of limited) {
        expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe('RATE_LIMITED');
      }
      expect((await as.user(`${sys.url}/sessions`)).status).toBe(200);
    });
  });
