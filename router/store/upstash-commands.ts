import { Redis } from '@upstash/redis';
import { CREATE_SESSION, QUEUE_JOIN, QUEUE_LEAVE, RATE_LIMIT, REPLICA_LEASE, UPDATE_SESSION } from './redis-scripts.js';
import type { RedisCommands, ScriptName } from './redis-commands.js';

const SCRIPTS: Record<ScriptName, string> = {
  create: CREATE_SESSION,
  update: UPDATE_SESSION,
  rate: RATE_LIMIT,
  replicas: REPLICA_LEASE,
  queueJoin: QUEUE_JOIN,
  queueLeave: QUEUE_LEAVE,
};

/**
 * @upstash/redis (Redis over HTTPS): what the Workers router uses. Results stay raw strings (no
 * automatic JSON parsing: the store parses and validates itself); scripts are the SDK's own `Script`
 * (EVALSHA, falling back to EVAL when the server does not know them yet).
 */
export class UpstashCommands implements RedisCommands {
  private readonly redis: Redis;
  private readonly scripts: Record<ScriptName, ReturnType<Redis['createScript']>>;

  constructor(opts: { url: string; token: string; timeoutMs?: number }) {
    this.redis = new Redis({
      url: opts.url,
      token: opts.token,
      automaticDeserialization: false,
      // Each HTTP call is bounded; the store's callers map failures to 503.
      signal: () => AbortSignal.timeout(opts.timeoutMs ?? 3000),
      retry: { retries: 2, backoff: (n) => Math.min(1000, 50 * 2 ** n) + Math.random() * 50 },
    });
    this.scripts = Object.fromEntries(Object.entries(SCRIPTS).map(([name, lua]) => [name, this.redis.createScript(lua)])) as typeof this.scripts;
  }

  script(name: ScriptName, keys: string[], args: Array<string | number>): Promise<unknown> {
    return this.scripts[name].exec(keys, args.map(String));
  }

  async get(key: string): Promise<string | null> {
    return ((await this.redis.get(key)) as string | null) ?? null;
  }

  async set(key: string, value: string): Promise<void> {
    await this.redis.set(key, value);
  }

  async del(key: string): Promise<void> {
    await this.redis.del(key);
  }

  async hset(key: string, field: string, value: string): Promise<void> {
    await this.redis.hset(key, { [field]: value });
  }

  async hdel(key: string, field: string): Promise<void> {
    await this.redis.hdel(key, field);
  }

  async hgetall(key: string): Promise<Record<string, string>> {
    // Raw (no deserialization): the SDK may hand back a flat [field, value, …] array or an object.
    const res = (await this.redis.hgetall(key)) as unknown;
    if (Array.isArray(res)) {
      const out: Record<string, string> = {};
      for (let i = 0; i + 1 < res.length; i += 2) out[String(res[i])] = String(res[i + 1]);
      return out;
    }
    return (res as Record<string, string> | null) ?? {};
  }

  async hget(key: string, field: string): Promise<string | null> {
    return ((await this.redis.hget(key, field)) as string | null) ?? null;
  }

  async hmget(key: string, fields: string[]): Promise<Array<string | null>> {
    // With automatic deserialization off the SDK hands back the raw array; with it on, an object.
    const res = (await this.redis.hmget(key, ...fields)) as unknown as Array<string | null> | Record<string, string | null> | null;
    if (Array.isArray(res)) return fields.map((_, i) => res[i] ?? null);
    return fields.map((f) => res?.[f] ?? null);
  }

  async hgetMany(keys: string[], field: string): Promise<Array<string | null>> {
    if (keys.length === 0) return [];
    const p = this.redis.pipeline();
    for (const k of keys) p.hget(k, field);
    return ((await p.exec()) as Array<string | null>).map((v) => v ?? null);
  }

  async zrevrangeByLex(key: string, max: string, min: string, count: number): Promise<string[]> {
    type Lex = '+' | '-' | `(${string}` | `[${string}`;
    return (await this.redis.zrange(key, max as Lex, min as Lex, { byLex: true, rev: true, offset: 0, count })) as string[];
  }

  async zrem(key: string, members: string[]): Promise<void> {
    if (members.length) await this.redis.zrem(key, ...members);
  }

  async smembers(key: string): Promise<string[]> {
    return (await this.redis.smembers(key)) as string[];
  }

  scard(key: string): Promise<number> {
    return this.redis.scard(key);
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async close(): Promise<void> {}
}
