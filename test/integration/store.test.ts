import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemorySessionStore } from '../../router/store/memory.js';
import { IoredisCommands, type IoredisConnection } from '../../router/store/ioredis-commands.js';
import { loadRouterConfig } from '../../router/config.js';
import { RedisSessionStore } from '../../router/store/redis.js';
import { UpstashCommands } from '../../router/store/upstash-commands.js';
import { startUpstashRest } from '../../harness/upstash-rest.js';
import type { SessionStore } from '../../router/store/types.js';
import { startRedis, type RedisServer } from '../../harness/processes.js';
import { storeContract } from './store-contract.js';

let redis: RedisServer;
/** TLS only, and an ACL user in place of `default`: reached the way the router's configuration says. */
let secured: RedisServer;
const ACL_USER = { name: 'bso-router', password: 'acl-password-for-tests-0123456789', rules: '~* &* +@all -@dangerous -@admin' };
let rest: Awaited<ReturnType<typeof startUpstashRest>>;
const REST_TOKEN = 'rest-token-for-tests';
const open: SessionStore[] = [];
beforeAll(async () => {
  redis = await startRedis();
  secured = await startRedis({ tls: true, aclUser: ACL_USER });
  rest = await startUpstashRest(redis.url, REST_TOKEN);
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});
afterAll(async () => {
  await rest?.close();
  await redis?.stop();
  await secured?.stop();
});

storeContract('memory', async () => {
  let offset = 0;
  const store = new MemorySessionStore({ retentionSec: 2, now: () => Date.now() + offset });
  return { store, advance: async (ms) => void (offset += ms) };
});

let db = 0;
storeContract('redis (real redis-server)', async () => {
  // A fresh key prefix per test keeps tests independent on one server.
  const store = new RedisSessionStore({ commands: new IoredisCommands({ url: redis.url }), keyPrefix: `{t${++db}}:`, retentionSec: 2 });
  open.push(store);
  // Redis expires keys on its own clock, so retention is observed by waiting for real.
  return { store, advance: (ms) => new Promise((r) => setTimeout(r, ms)) };
});

/** The router's own configuration for the TLS server with an ACL user, as an operator would give it. */
const securedConnection = (over: Record<string, string> = {}) =>
  loadRouterConfig({
    REDIS_URL: secured.url,
    REDIS_TLS_CA_FILE: secured.caFile!,
    AGENT_TOKEN: 'an-agent-token-for-tests',
    SESSION_TOKEN_SECRET: 'x'.repeat(32),
    API_KEYS: 'ci:a-key-for-tests-0123456789',
    ...over,
  }).redis!;

storeContract('redis over TLS with an ACL user (rediss://, REDIS_TLS_CA_FILE, `default` off)', async () => {
  const store = new RedisSessionStore({ commands: new IoredisCommands(securedConnection()), keyPrefix: `{s${++db}}:`, retentionSec: 2 });
  open.push(store);
  return { store, advance: (ms) => new Promise((r) => setTimeout(r, ms)) };
});

describe('redis over TLS with an ACL user: what does not get in', () => {
  const refused = async (connection: IoredisConnection) => {
    const commands = new IoredisCommands(connection, { commandTimeoutMs: 3000 });
    try {
      return await commands.get('anything').then(
        () => 'answered',
        (err: Error) => err.message,
      );
    } finally {
      await commands.close();
    }
  };
  it('the same user and password over TLS answer (the control)', async () => {
    expect(await refused(securedConnection())).toBe('answered');
  });
  it('a client without the CA, the right user but the wrong password, or no user at all is refused', async () => {
    const url = new URL(secured.url);
    // System CAs only: the test CA's certificate is not trusted, the connection never comes up.
    expect(await refused({ url: secured.url })).toMatch(/max retries|connection is closed/i);
    expect(await refused({ ...securedConnection(), url: secured.url.replace(encodeURIComponent(ACL_USER.password), 'wrong-password') })).toMatch(
      /WRONGPASS|invalid username-password/i,
    );
    expect(await refused({ ...securedConnection(), url: `rediss://${url.host}` })).toMatch(/NOAUTH|Authentication required/i);
    // Plain TCP to the TLS port gets nowhere either.
    expect(await refused({ url: `redis://${ACL_USER.name}:${encodeURIComponent(ACL_USER.password)}@${url.host}` })).not.toBe('answered');
  });
  it('REDIS_TLS_CA_FILE that is missing or holds no certificate stops start-up, naming the variable', () => {
    expect(() => new IoredisCommands(securedConnection({ REDIS_TLS_CA_FILE: '/nonexistent/ca.crt' }))).toThrow(/REDIS_TLS_CA_FILE: cannot read/);
    expect(() => new IoredisCommands(securedConnection({ REDIS_TLS_CA_FILE: '/etc/hostname' }))).toThrow(/REDIS_TLS_CA_FILE: .* holds no PEM certificate/);
  });
});

storeContract('upstash (@upstash/redis → Upstash REST endpoint → real redis-server)', async () => {
  const store = new RedisSessionStore({ commands: new UpstashCommands({ url: rest.url, token: REST_TOKEN }), keyPrefix: `{u${++db}}:`, retentionSec: 2 });
  open.push(store);
  return { store, advance: (ms) => new Promise((r) => setTimeout(r, ms)) };
});

describe('the Upstash REST endpoint speaks what @upstash/redis sends', () => {
  it('round-trips UTF-8 through base64 responses, pipelines and transactions', async () => {
    const { Redis: Upstash } = await import('@upstash/redis');
    const r = new Upstash({ url: rest.url, token: REST_TOKEN, automaticDeserialization: false });
    expect(await r.set('k:utf8', 'žluťoučký 🐎')).toBe('OK');
    expect(await r.get('k:utf8')).toBe('žluťoučký 🐎');
    const p = r.pipeline();
    p.incr('k:n');
    p.incr('k:n');
    p.hset('k:h', { a: '1' });
    expect(await p.exec()).toEqual([1, 2, 1]);
    const m = r.multi();
    m.get('k:n');
    m.del('k:n');
    expect(await m.exec()).toEqual(['2', 1]);
  });

  it('refuses a wrong token and reports command errors', async () => {
    const { Redis: Upstash } = await import('@upstash/redis');
    const bad = new Upstash({ url: rest.url, token: 'wrong', retry: false });
    await expect(bad.get('x')).rejects.toThrow(/Unauthorized/);
    const r = new Upstash({ url: rest.url, token: REST_TOKEN, retry: false });
    await expect(r.evalsha('0000000000000000000000000000000000000000', [], [])).rejects.toThrow(/NOSCRIPT/);
  });
});
