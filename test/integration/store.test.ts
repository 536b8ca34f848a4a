import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemorySessionStore } from '../../router/store/memory.js';
import { IoredisCommands } from '../../router/store/ioredis-commands.js';
import { RedisSessionStore } from '../../router/store/redis.js';
import { UpstashCommands } from '../../router/store/upstash-commands.js';
import { startUpstashRest } from '../../harness/upstash-rest.js';
import type { SessionStore } from '../../router/store/types.js';
import { startRedis, type RedisServer } from '../../harness/processes.js';
import { storeContract } from './store-contract.js';

let redis: RedisServer;
let rest: Awaited<ReturnType<typeof startUpstashRest>>;
const REST_TOKEN = 'rest-token-for-tests';
const open: SessionStore[] = [];
beforeAll(async () => {
  redis = await startRedis();
  rest = await startUpstashRest(redis.url, REST_TOKEN);
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});
afterAll(async () => {
  await rest?.close();
  await redis?.stop();
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
