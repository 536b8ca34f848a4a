import { describe, expect, it } from 'vitest';
import { Access } from '../../router/auth/access.js';
import { ANONYMOUS, parseEnvKeys, type KeyStore, type StoredKey } from '../../router/auth/keys.js';
import { MemoryRateLimiter, parseRatePolicy, rateLimitHeaders } from '../../router/auth/rate-limit.js';
import { SessionTokens } from '../../router/auth/session-token.js';
import { loadRouterConfig, type AuthConfig } from '../../router/config.js';
import { publicBases, type PublicUrlPolicy, type RequestInfo } from '../../router/public-url.js';
import { sha256Hex } from '../../shared/crypto.js';
import { ConfigError } from '../../shared/env.js';
import type { Session } from '../../shared/session.js';
import { ManualClock } from '../helpers/clock.js';

const USER_KEY = 'user-key-0123456789abcdefghij';
const ADMIN_KEY = 'admin-key-0123456789abcdefghij';
const SECRET = 'a-session-token-secret-0123456789abcdef';

const session = (over: Partial<Session> = {}): Session => ({
  id: 'aaaaaaaa-0000-4000-8000-000000000001',
  status: 'running',
  createdAt: 1_000_000,
  updatedAt: 1_000_000,
  expiresAt: 1_000_000 + 300_000,
  timeout: 300,
  idleTimeout: 300,
  options: {},
  cluster: 'local',
  owner: 'env-alice',
  ...over,
});

const request = (headers: Record<string, string> = {}, over: Partial<RequestInfo> = {}): RequestInfo => ({
  url: 'http://127.0.0.1:3000/sessions',
  method: 'GET',
  header: (n) => headers[n.toLowerCase()] ?? null,
  clientAddress: '127.0.0.9',
  ...over,
});

function authConfig(over: Partial<AuthConfig> = {}): AuthConfig {
  return {
    mode: 'keys',
    reason: 'API keys configured',
    envKeys: [...parseEnvKeys(`alice:${USER_KEY}`, 'user'), ...parseEnvKeys(`root:${ADMIN_KEY}`, 'admin')],
    keyCacheMs: 5000,
    sessionTokenSecrets: [SECRET],
    allowedOrigins: ['https://app.example'],
    limits: { create: null, api: null, unauthenticated: null },
    maxSessionsPerKey: 0,
    ...over,
  };
}

/** A key store in memory, so a test can revoke under the cache. */
class ListedKeys implements KeyStore {
  readonly byHash = new Map<string, StoredKey>();
  async findByHash(hash: string) {
    return this.byHash.get(hash) ?? null;
  }
  async create(): Promise<never> {
    throw new Error('unused');
  }
  async list() {
    return [...this.byHash.values()];
  }
  async revoke(id: string) {
    for (const [h, k] of this.byHash) if (k.id === id) return this.byHash.delete(h);
    return false;
  }
}

const makeAccess = (over: Partial<AuthConfig> = {}, keyStore: KeyStore | null = null, clock = new ManualClock()) =>
  new Access({ config: authConfig(over), keyStore, tokens: new SessionTokens([SECRET]), limiter: new MemoryRateLimiter(), clock });

describe('rate policies', () => {
  it.each([
    ['60/min', { limit: 60, periodSec: 60, burst: 60 }],
    ['60/min,burst=10', { limit: 60, periodSec: 60, burst: 10 }],
    ['10 / s , burst = 20', { limit: 10, periodSec: 1, burst: 20 }],
    ['1000/hour', { limit: 1000, periodSec: 3600, burst: 1000 }],
  ])('%s', (text, expected) => expect(parseRatePolicy('api', text)).toEqual({ name: 'api', ...expected, field: `"api";q=${expected.limit};w=${expected.periodSec}` }));
  it.each(['off', '', undefined])('%s is no limit', (text) => expect(parseRatePolicy('api', text)).toBeNull());
  it.each(['60', '60/fortnight', '0/min', '5/min,burst=0', 'sixty/min'])('%s is refused', (text) => expect(() => parseRatePolicy('api', text)).toThrow());
});

describe('GCRA in memory (the Redis script runs the same math; test/integration/rate-limit.test.ts runs both)', () => {
  it('lets the burst through at once, then one request per interval, driven by the clock', async () => {
    const limiter = new MemoryRateLimiter();
    const clock = new ManualClock(0);
    const policy = parseRatePolicy('create', '60/min,burst=3')!;
    const take = () => limiter.take([{ key: 'k', policy }], clock.now());
    const first = await Promise.all([take(), take(), take()]);
    expect(first.map((d) => [d.allowed, d.buckets[0]!.remaining])).toEqual([
      [true, 2],
      [true, 1],
      [true, 0],
    ]);
    const refused = await take();
    expect(refused.allowed).toBe(false);
    expect(refused.buckets[0]!.retryAfterMs).toBe(1000);
    clock.advance(999);
    expect((await take()).allowed).toBe(false);
    clock.advance(1);
    expect((await take()).allowed).toBe(true);
    expect((await take()).allowed).toBe(false);
    // A full minute refills the whole burst, and never more.
    clock.advance(60_000);
    const again = await Promise.all([take(), take(), take(), take()]);
    expect(again.map((d) => d.allowed)).toEqual([true, true, true, false]);
  });

  it('charges every bucket or none, and keeps keys and policies apart', async () => {
    const limiter = new MemoryRateLimiter();
    const api = parseRatePolicy('api', '100/min')!;
    const create = parseRatePolicy('create', '1/min')!;
    expect(
      (
        await limiter.take(
          [
            { key: 'a', policy: api },
            { key: 'a', policy: create },
          ],
          0,
        )
      ).allowed,
    ).toBe(true);
    const refused = await limiter.take(
      [
        { key: 'a', policy: api },
        { key: 'a', policy: create },
      ],
      0,
    );
    expect(refused.allowed).toBe(false);
    // The refused request cost the api bucket nothing, and says what it has now.
    expect(refused.buckets.map((b) => b.remaining)).toEqual([99, 0]);
    expect((await limiter.take([{ key: 'a', policy: api }], 0)).buckets[0]!.remaining).toBe(98);
    expect((await limiter.take([{ key: 'b', policy: create }], 0)).allowed).toBe(true);
    expect(rateLimitHeaders(refused)).toEqual({ 'ratelimit-policy': '"api";q=100;w=60, "create";q=1;w=60', ratelimit: '"api";r=99;t=1, "create";r=0;t=60' });
  });
});

describe('session tokens', () => {
  const tokens = new SessionTokens([SECRET]);
  it('open only their own session, until it expires', async () => {
    const s = session();
    const token = await tokens.mint(s);
    expect(token).toMatch(/^env-alice\.\d+\.[\w-]{43}$/);
    expect(await tokens.verify(token, s.id, s.createdAt)).toEqual({ owner: 'env-alice', expiresAtSec: Math.ceil(s.expiresAt / 1000) });
    expect(await tokens.verify(token, 'aaaaaaaa-0000-4000-8000-000000000002', s.createdAt)).toBeNull();
    expect(await tokens.verify(token, s.id, s.expiresAt)).toBeNull();
  });
  it('refuse any tampering: owner, expiry, signature, shape', async () => {
    const s = session();
    const [owner, exp, sig] = (await tokens.mint(s)).split('.') as [string, string, string];
    const flipped = sig.slice(0, 10) + (sig[10] === 'A' ? 'B' : 'A') + sig.slice(11);
    for (const bad of [`env-bob.${exp}.${sig}`, `${owner}.${Number(exp) + 3600}.${sig}`, `${owner}.${exp}.${flipped}`, `${owner}.${exp}`, '', 'x'.repeat(300)]) {
      expect(await tokens.verify(bad, s.id, s.createdAt)).toBeNull();
    }
    expect(await new SessionTokens(['another-secret-0123456789abcdef0123']).verify(`${owner}.${exp}.${sig}`, s.id, s.createdAt)).toBeNull();
  });
  it("Node's own HMAC and Web Crypto's (the Workers router's) make the same tokens", async () => {
    const { createHmac } = await import('node:crypto');
    const nodeTokens = new SessionTokens([SECRET], (secret, message) => createHmac('sha256', secret).update(message).digest());
    const s = session();
    expect(await nodeTokens.mint(s)).toBe(await tokens.mint(s));
    expect(await tokens.verify(await nodeTokens.mint(s), s.id, s.createdAt)).not.toBeNull();
  });

  it('rotation: the new secret signs, the old one still verifies', async () => {
    const s = session();
    const old = await tokens.mint(s);
    const rotated = new SessionTokens(['the-new-secret-0123456789abcdef0123', SECRET]);
    expect(await rotated.verify(old, s.id, s.createdAt)).not.toBeNull();
    const fresh = await rotated.mint(s);
    expect(fresh).not.toBe(old);
    expect(await tokens.verify(fresh, s.id, s.createdAt)).toBeNull();
  });
});

describe('API keys', () => {
  it('parses name:key pairs and refuses weak or malformed entries without echoing the key', () => {
    expect(parseEnvKeys(` ci:${USER_KEY} , bot:${ADMIN_KEY}`, 'user').map((k) => [k.name, k.role])).toEqual([
      ['ci', 'user'],
      ['bot', 'user'],
    ]);
    for (const bad of ['ci', `:${USER_KEY}`, 'ci:short', `c i:${USER_KEY}`, `ci:${USER_KEY} x`]) {
      let message = '';
      try {
        parseEnvKeys(bad, 'user');
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).not.toBe('');
      expect(message).not.toContain(USER_KEY);
    }
  });

  it('accepts Authorization: Bearer and X-API-Key, with the role of the key', async () => {
    const access = makeAccess();
    expect(await access.identify(request({ authorization: `Bearer ${USER_KEY}` }))).toEqual({ keyId: 'env-alice', name: 'alice', role: 'user' });
    expect(await access.identify(request({ 'x-api-key': ADMIN_KEY }))).toEqual({ keyId: 'env-root', name: 'root', role: 'admin' });
    for (const h of [{}, { authorization: `Basic ${USER_KEY}` } as Record<string, string>, { authorization: `Bearer ${USER_KEY}x` }, { 'x-api-key': 'nope' }])
      expect(await access.identify(request(h))).toBeNull();
    await expect(access.admit(request(), 'api')).rejects.toMatchObject({ code: 'UNAUTHORIZED', status: 401 });
  });

  it('a revoked stored key works only until its cache entry expires', async () => {
    const clock = new ManualClock();
    const keys = new ListedKeys();
    const key = 'bso_stored-key-0123456789abcdefghijkl';
    keys.byHash.set(await sha256Hex(key), { id: 'key_abc', name: 'ci', role: 'user', createdAt: 0 });
    const access = makeAccess({ keyCacheMs: 5000 }, keys, clock);
    expect((await access.identify(request({ 'x-api-key': key })))?.keyId).toBe('key_abc');
    await keys.revoke('key_abc');
    clock.advance(4999);
    expect((await access.identify(request({ 'x-api-key': key })))?.keyId).toBe('key_abc');
    clock.advance(1);
    expect(await access.identify(request({ 'x-api-key': key }))).toBeNull();
  });

  it('with AUTH_MODE none every request is the anonymous admin', async () => {
    const access = makeAccess({ mode: 'none', reason: 'no key configured' });
    expect((await access.admit(request(), 'api')).caller).toEqual(ANONYMOUS);
  });
});

describe('limits in admission', () => {
  it('unauthenticated requests are throttled per address, 401 until the bucket is empty, then 429', async () => {
    const access = makeAccess({ limits: { create: null, api: null, unauthenticated: parseRatePolicy('unauthenticated', '10/min,burst=2') } });
    const bad = request({ authorization: 'Bearer wrong-key-0123456789abcdef' });
    await expect(access.admit(bad, 'api')).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expect(access.admit(bad, 'api')).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expect(access.admit(bad, 'api')).rejects.toMatchObject({ code: 'RATE_LIMITED', status: 429, retryAfterSec: 6 });
    // Another address has its own bucket; a valid key is not charged to the address at all.
    await expect(access.admit({ ...bad, clientAddress: '127.0.0.10' }, 'api')).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    expect((await access.admit(request({ authorization: `Bearer ${USER_KEY}` }), 'api')).caller.keyId).toBe('env-alice');
  });

  it('a create is charged to the api and the create bucket of its key, with RateLimit headers', async () => {
    const access = makeAccess({ limits: { create: parseRatePolicy('create', '60/min,burst=1'), api: parseRatePolicy('api', '600/min,burst=5'), unauthenticated: null } });
    const alice = request({ authorization: `Bearer ${USER_KEY}` }, { method: 'POST' });
    const ok = await access.admit(alice, 'create');
    expect(ok.headers).toEqual({ 'ratelimit-policy': '"api";q=600;w=60, "create";q=60;w=60', ratelimit: '"api";r=4;t=1, "create";r=0;t=1' });
    await expect(access.admit(alice, 'create')).rejects.toMatchObject({ code: 'RATE_LIMITED', retryAfterSec: 1, details: { limits: ['create'] } });
    expect((await access.admit(alice, 'api')).headers.ratelimit).toBe('"api";r=3;t=1');
  });
});

describe('origins', () => {
  const access = makeAccess();
  it.each([
    ['GET without Origin', request(), false, null],
    ['GET from any origin (not state-changing)', request({ origin: 'https://evil.example' }), false, null],
    ['POST from a foreign origin', request({ origin: 'https://evil.example' }, { method: 'POST' }), false, 'FORBIDDEN_ORIGIN'],
    ['DELETE from Origin null', request({ origin: 'null' }, { method: 'DELETE' }), false, 'FORBIDDEN_ORIGIN'],
    ['a WebSocket from a foreign origin', request({ origin: 'https://evil.example' }), true, 'FORBIDDEN_ORIGIN'],
    ['a WebSocket from an allowed origin', request({ origin: 'https://app.example' }), true, null],
    ['a WebSocket without Origin (Playwright, Puppeteer)', request(), true, null],
  ])('%s', (_name, req, upgrade, code) => {
    if (code) expect(() => access.checkOrigin(req, upgrade)).toThrow(expect.objectContaining({ code, status: 403 }));
    else expect(() => access.checkOrigin(req, upgrade)).not.toThrow();
  });
});

describe('public URLs never reflect a forged host', () => {
  const policy = (over: Partial<PublicUrlPolicy> = {}): PublicUrlPolicy => ({
    trustProxy: false,
    allowedHosts: [],
    defaultHosts: () => new Set(['127.0.0.1:3000', 'localhost:3000']),
    fallbackHost: () => '127.0.0.1:3000',
    ...over,
  });
  const at = (headers: Record<string, string>) => request(headers, { url: `http://${headers.host ?? '127.0.0.1:3000'}/sessions` });
  it.each([
    ['the listen address', {}, at({ host: 'localhost:3000' }), 'http://localhost:3000'],
    ['a forged Host', {}, at({ host: 'evil.example' }), 'http://127.0.0.1:3000'],
    ['X-Forwarded-Host without TRUST_PROXY', {}, at({ host: 'localhost:3000', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' }), 'http://localhost:3000'],
    ['X-Forwarded-* with TRUST_PROXY', { trustProxy: true }, at({ 'x-forwarded-host': 'api.example.com', 'x-forwarded-proto': 'https' }), 'https://api.example.com'],
    ['X-Forwarded-Host outside ALLOWED_HOSTS', { trustProxy: true, allowedHosts: ['api.example.com'] }, at({ 'x-forwarded-host': 'evil.example' }), 'http://127.0.0.1:3000'],
    ['a Host with junk in it', {}, at({ host: 'a/b@evil' }), 'http://127.0.0.1:3000'],
    ['PUBLIC_URL wins', { publicUrl: 'https://browsers.example.com' }, at({ host: 'evil.example' }), 'https://browsers.example.com'],
  ] as const)('%s', (_name, over, req, http) => {
    expect(publicBases(req, policy(over))).toEqual({ http, ws: http.replace(/^http/, 'ws') });
  });
});

describe('secure by default (router configuration)', () => {
  const base = { AGENT_TOKEN: 'agent-token-0123456789' };
  const fails = (env: Record<string, string>, runtime: 'node' | 'edge' = 'node') => {
    try {
      loadRouterConfig(env, runtime);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
    throw new Error('expected a configuration error');
  };
  it('with no key it listens on loopback only, unauthenticated', () => {
    const c = loadRouterConfig(base);
    expect([c.host, c.auth.mode, c.auth.reason, c.auth.limits.create]).toEqual(['127.0.0.1', 'none', 'no key configured', null]);
  });
  it('refuses any other address without keys, naming API_KEYS and AUTH_MODE', () => {
    for (const HOST of ['0.0.0.0', '::', '10.1.2.3']) expect(fails({ ...base, HOST })).toMatch(/API_KEYS.*AUTH_MODE=none/s);
    expect(loadRouterConfig({ ...base, HOST: '0.0.0.0', AUTH_MODE: 'none' }).auth.mode).toBe('none');
  });
  it('with keys it listens everywhere and the default limits apply', () => {
    const c = loadRouterConfig({ ...base, API_KEYS: `ci:${USER_KEY}` });
    expect([c.host, c.auth.mode]).toEqual(['0.0.0.0', 'keys']);
    expect(c.auth.limits.create).toMatchObject({ name: 'create', limit: 60, periodSec: 60, burst: 10 });
    expect(c.auth.limits.unauthenticated).not.toBeNull();
  });
  it('a shared store needs SESSION_TOKEN_SECRET; the edge needs keys unless AUTH_MODE=none', () => {
    expect(fails({ ...base, API_KEYS: `ci:${USER_KEY}`, REDIS_URL: 'redis://127.0.0.1:1' })).toContain('SESSION_TOKEN_SECRET');
    expect(fails(base, 'edge')).toContain('SESSION_TOKEN_SECRET');
    expect(loadRouterConfig({ ...base, SESSION_TOKEN_SECRET: SECRET }, 'edge').auth.mode).toBe('keys');
    expect(loadRouterConfig({ ...base, AUTH_MODE: 'none' }, 'edge').auth.mode).toBe('none');
    expect(fails({ ...base, AUTH_MODE: 'keys' })).toContain('AUTH_MODE');
  });
  it.each([
    [{ API_KEYS: 'ci:short' }, 'API_KEYS'],
    [{ API_KEYS: `ci:${USER_KEY}`, ADMIN_API_KEYS: `ci:${ADMIN_KEY}` }, 'used twice'],
    [{ SESSION_TOKEN_SECRET: 'short' }, 'SESSION_TOKEN_SECRET'],
    [{ ALLOWED_ORIGINS: 'https://app.example/path' }, 'ALLOWED_ORIGINS'],
    [{ RATE_LIMIT_CREATE: 'lots' }, 'RATE_LIMIT_CREATE'],
    [{ METRICS_TOKEN: 'short' }, 'METRICS_TOKEN'],
  ])('%o is refused, naming %s', (env, name) => expect(fails({ ...base, ...env })).toContain(name));
});
