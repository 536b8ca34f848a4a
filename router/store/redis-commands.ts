/**
 * The few Redis commands the session store needs, so one store implementation (redis.ts) runs over
 * any client: ioredis on Node, @upstash/redis (REST) on Workers.
 */
export type ScriptName = 'create' | 'update' | 'rate' | 'replicas' | 'queueJoin' | 'queueLeave';

export interface RedisCommands {
  /** Runs one of the store's Lua scripts (redis-scripts.ts) atomically. */
  script(name: ScriptName, keys: string[], args: Array<string | number>): Promise<unknown>;
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  del(key: string): Promise<void>;
  hget(key: string, field: string): Promise<string | null>;
  hset(key: string, field: string, value: string): Promise<void>;
  hdel(key: string, field: string): Promise<void>;
  hgetall(key: string): Promise<Record<string, string>>;
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
