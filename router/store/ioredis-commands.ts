import { Redis, type RedisOptions } from 'ioredis';
import { CREATE_SESSION, RATE_LIMIT, UPDATE_SESSION } from './redis-scripts.js';
import type { RedisCommands, ScriptName } from './redis-commands.js';

type Scripted = Redis & Record<'bsoCreate' | 'bsoUpdate' | 'bsoRate', (...keysThenArgs: Array<string | number>) => Promise<unknown>>;

export type IoredisConnection = { url: string } | { host: string; port: number; password?: string };

/** ioredis: bounded commands, auto-pipelining, scripts by EVALSHA with EVAL fallback (defineCommand). */
export class IoredisCommands implements RedisCommands {
  private readonly redis: Scripted;

  constructor(connection: IoredisConnection, opts: { commandTimeoutMs?: number } = {}) {
    const common: RedisOptions = {
      // Every command is bounded; a dead Redis turns into errors (503 upstream), not hung requests.
      commandTimeout: opts.commandTimeoutMs ?? 2000,
      connectTimeout: 3000,
      maxRetriesPerRequest: 1,
      enableAutoPipelining: true,
      retryStrategy: (times) => Math.min(50 * 2 ** times, 2000) + Math.floor(Math.random() * 100),
    };
    const redis = 'url' in connection ? new Redis(connection.url, common) : new Redis({ ...common, ...connection });
    // Without a listener ioredis prints unhandled 'error' events; failures surface through commands.
    redis.on('error', () => {});
    redis.defineCommand('bsoCreate', { numberOfKeys: 5, lua: CREATE_SESSION });
    redis.defineCommand('bsoUpdate', { numberOfKeys: 3, lua: UPDATE_SESSION });
    // The number of buckets varies per call: the key count is the first argument.
    redis.defineCommand('bsoRate', { lua: RATE_LIMIT });
    this.redis = redis as Scripted;
  }

  script(name: ScriptName, keys: string[], args: Array<string | number>): Promise<unknown> {
    if (name === 'rate') return this.redis.bsoRate(keys.length, ...keys, ...args);
    return name === 'create' ? this.redis.bsoCreate(...keys, ...args) : this.redis.bsoUpdate(...keys, ...args);
  }

  get(key: string) {
    return this.redis.get(key);
  }

  async set(key: string, value: string): Promise<void> {
    await this.redis.set(key, value);
  }

  async del(key: string): Promise<void> {
    await this.redis.del(key);
  }

  async hset(key: string, field: string, value: string): Promise<void> {
    await this.redis.hset(key, field, value);
  }

  async hdel(key: string, field: string): Promise<void> {
    await this.redis.hdel(key, field);
  }

  hgetall(key: string) {
    return this.redis.hgetall(key);
  }

  hget(key: string, field: string) {
    return this.redis.hget(key, field);
  }

  hmget(key: string, fields: string[]) {
    return this.redis.hmget(key, ...fields);
  }

  async hgetMany(keys: string[], field: string): Promise<Array<string | null>> {
    if (keys.length === 0) return [];
    const res = (await this.redis.pipeline(keys.map((k) => ['hget', k, field])).exec()) ?? [];
    return res.map(([err, v]) => {
      if (err) throw err;
      return (v as string | null) ?? null;
    });
  }

  zrevrangeByLex(key: string, max: string, min: string, count: number) {
    return this.redis.zrange(key, max, min, 'BYLEX', 'REV', 'LIMIT', 0, count);
  }

  async zrem(key: string, members: string[]): Promise<void> {
    if (members.length) await this.redis.zrem(key, ...members);
  }

  smembers(key: string) {
    return this.redis.smembers(key);
  }

  scard(key: string) {
    return this.redis.scard(key);
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
