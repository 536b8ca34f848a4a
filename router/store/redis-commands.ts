/**
 * The few Redis commands the session store needs, so one store implementation (redis.ts) runs over
 * any client: ioredis on Node, @upstash/redis (REST) on Workers.
 */
export type ScriptName = 'create' | 'update';

export interface RedisCommands {
  /** Runs one of the store's Lua scripts (redis-scripts.ts) atomically. */
  script(name: ScriptName, keys: string[], args: Array<string | number>): Promise<unknown>;
  hget(key: string, field: string): Promise<string | null>;
  hmget(key: string, fields: string[]): Promise<Array<string | null>>;
  /** HGET of one field across many keys, in one round trip. */
  hgetMany(keys: string[], field: string): Promise<Array<string | null>>;
  /** ZRANGE key max min BYLEX REV LIMIT 0 count. */
  zrevrangeByLex(key: string, max: string, min: string, count: number): Promise<string[]>;
  zrem(key: string, members: string[]): Promise<void>;
  smembers(key: string): Promise<string[]>;
  scard(key: string): Promise<number>;
  ping(): Promise<void>;
  close(): Promise<void>;
}
