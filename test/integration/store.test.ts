import { afterAll, afterEach, beforeAll } from 'vitest';
import { MemorySessionStore } from '../../router/store/memory.js';
import { RedisSessionStore } from '../../router/store/redis.js';
import type { SessionStore } from '../../router/store/types.js';
import { startRedis, type RedisServer } from '../helpers/processes.js';
import { storeContract } from './store-contract.js';

let redis: RedisServer;
const open: SessionStore[] = [];
beforeAll(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});
afterAll(async () => {
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
  const store = new RedisSessionStore({ connection: { url: redis.url }, keyPrefix: `{t${++db}}:`, retentionSec: 2 });
  open.push(store);
  // Redis expires keys on its own clock, so retention is observed by waiting for real.
  return { store, advance: (ms) => new Promise((r) => setTimeout(r, ms)) };
});
