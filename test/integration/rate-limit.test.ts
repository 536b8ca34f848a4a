import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisKeyStore } from '../../router/auth/keys.js';
import { MemoryRateLimiter, parseRatePolicy, RedisRateLimiter, type RateLimiter } from '../../router/auth/rate-limit.js';
import { IoredisCommands } from '../../router/store/ioredis-commands.js';
import { UpstashCommands } from '../../router/store/upstash-commands.js';
import { sha256Hex } from '../../shared/crypto.js';
import { startRedis, type RedisServer } from '../../harness/processes.js';
import { startUpstashRest } from '../../harness/upstash-rest.js';

let redis: RedisServer;
let rest: Awaited<ReturnType<typeof startUpstashRest>>;
const REST_TOKEN = 'rest-token-for-rate-tests';
const clients: Array<{ close(): Promise<void> }> = [];
beforeAll(async () => {
  redis = await startRedis();
  rest = await startUpstashRest(redis.url, REST_TOKEN);
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await rest?.close();
  await redis?.stop();
});

let prefix = 0;
const ioredis = () => {
  const c = new IoredisCommands({ url: redis.url });
  clients.push(c);
  return c;
};

/** The one behaviour every limiter must have; time is passed in, so the tests drive it. */
function limiterContract(name: string, make: () => RateLimiter) {
  describe(`RateLimiter contract: ${name}`, () => {
    const create = parseRatePolicy('create', '60/min,burst=3')!;
    // Time is the test's, but a bucket key's TTL in Redis runs on real time (it lives as long as its
    // debt: a few intervals): a slow interval keeps a charged bucket alive through a slow round trip
    // (at 6000/min a key lived 30 ms, and one charge vanished on a loaded machine).
    const api = parseRatePolicy('api', '60/min,burst=100')!;

    it('passes exactly the burst of a concurrent flood, then refills at the rate', async () => {
      const limiter = make();
      const t0 = 1_700_000_000_000;
      const flood = await Promise.all(Array.from({ length: 12 }, () => limiter.take([{ key: 'k', policy: create }], t0)));
      expect(flood.filter((d) => d.allowed)).toHaveLength(3);
      const refused = flood.filter((d) => !d.allowed);
      expect(refused.every((d) => d.buckets[0]!.retryAfterMs === 1000 && d.buckets[0]!.remaining === 0)).toBe(true);
      expect((await limiter.take([{ key: 'k', policy: create }], t0 + 999)).allowed).toBe(false);
      expect((await limiter.take([{ key: 'k', policy: create }], t0 + 1000)).allowed).toBe(true);
      // After a quiet minute the burst is back, and no more than the burst.
      const later = await Promise.all(Array.from({ length: 5 }, () => limiter.take([{ key: 'k', policy: create }], t0 + 70_000)));
      expect(later.filter((d) => d.allowed)).toHaveLength(3);
    });

    it('is all or nothing across buckets, and keys do not share buckets', async () => {
      const limiter = make();
      const t = 1_700_000_000_000;
      const both = [
        { key: 'a', policy: api },
        { key: 'a', policy: create },
      ];
      for (let i = 0; i < 3; i++) expect((await limiter.take(both, t)).allowed).toBe(true);
      const refused = await limiter.take(both, t);
      expect(refused.allowed).toBe(false);
      expect(refused.buckets.map((b) => [b.policy.name, b.remaining])).toEqual([
        ['api', 97],
        ['create', 0],
      ]);
      expect((await limiter.take([{ key: 'a', policy: api }], t)).buckets[0]!.remaining).toBe(96);
      expect((await limiter.take([{ key: 'b', policy: create }], t)).allowed).toBe(true);
    });

    it('handles sub-millisecond intervals (high rates) without drifting', async () => {
      const limiter = make();
      const fast = parseRatePolicy('api', '20000/s,burst=5')!;
      const t = 1_700_000_000_000;
      const first = await Promise.all(Array.from({ length: 8 }, () => limiter.take([{ key: 'f', policy: fast }], t)));
      expect(first.filter((d) => d.allowed)).toHaveLength(5);
      // 1 ms later, 20 more requests' worth has accrued, capped at the burst.
      const next = await Promise.all(Array.from({ length: 8 }, () => limiter.take([{ key: 'f', policy: fast }], t + 1)));
      expect(next.filter((d) => d.allowed)).toHaveLength(5);
    });
  });
}

limiterContract('memory', () => new MemoryRateLimiter());
limiterContract('redis (real redis-server)', () => new RedisRateLimiter({ commands: ioredis(), keyPrefix: `{rl${++prefix}}:` }));
limiterContract(
  'upstash (REST → real redis-server)',
  () => new RedisRateLimiter({ commands: new UpstashCommands({ url: rest.url, token: REST_TOKEN }), keyPrefix: `{ru${++prefix}}:` }),
);

describe('API keys stored in Redis (what `npm run keys` manages)', () => {
  it('are kept only as hashes, found by the hash, listed, and gone when revoked', async () => {
    const commands = ioredis();
    const keyPrefix = `{keys${++prefix}}:`;
    const keys = new RedisKeyStore({ commands, keyPrefix });
    const { key, record } = await keys.create('ci', 'user', 1234);
    expect(key).toMatch(/^bso_[\w-]{43}$/);
    expect(record).toMatchObject({ name: 'ci', role: 'user', createdAt: 1234 });
    const admin = await keys.create('ops', 'admin', 1235);
    expect(await keys.findByHash(await sha256Hex(key))).toEqual(record);
    expect((await keys.list()).map((k) => k.name)).toEqual(['ci', 'ops']);
    // Nothing in Redis holds the key itself.
    const { Redis } = await import('ioredis');
    const raw = new Redis(redis.url);
    const dump = JSON.stringify(
      await Promise.all((await raw.keys(`${keyPrefix}*`)).map(async (k) => [k, (await raw.type(k)) === 'hash' ? await raw.hgetall(k) : await raw.get(k)])),
    );
    raw.disconnect();
    expect(dump).not.toContain(key);
    expect(dump).not.toContain(admin.key);
    expect(await keys.revoke(record.id)).toBe(true);
    expect(await keys.revoke(record.id)).toBe(false);
    expect(await keys.findByHash(await sha256Hex(key))).toBeNull();
    expect((await keys.list()).map((k) => k.name)).toEqual(['ops']);
    // The Workers router reads the same records through Upstash.
    const viaUpstash = new RedisKeyStore({ commands: new UpstashCommands({ url: rest.url, token: REST_TOKEN }), keyPrefix });
    expect(await viaUpstash.findByHash(await sha256Hex(admin.key))).toEqual(admin.record);
    expect((await viaUpstash.list()).map((k) => k.id)).toEqual([admin.record.id]);
  });
});
