import { readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import { ConfigError } from '../../shared/env.js';
import { CREATE_SESSION, QUEUE_JOIN, QUEUE_LEAVE, RATE_LIMIT, REPLICA_LEASE, UPDATE_SESSION } from './redis-scripts.js';
import type { RedisCommands, ScriptName } from './redis-commands.js';

type Scripted = Redis &
  Record<'bsoCreate' | 'bsoUpdate' | 'bsoRate' | 'bsoReplicas' | 'bsoQueueJoin' | 'bsoQueueLeave', (...keysThenArgs: Array<string | number>) => Promise<unknown>>;

/** TLS to Redis; the CA in `caFile` (PEM) replaces the system's when given. */
export type RedisTls = { caFile?: string };

export type IoredisConnection = ({ url: string } | { host: string; port: number; username?: string; password?: string }) & { tls?: RedisTls };

/** The CA file is read once, when the process connects; a bad one stops start-up with the variable named. */
function readCaFile(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`invalid configuration:\n  REDIS_TLS_CA_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`invalid configuration:\n  REDIS_TLS_CA_FILE: ${file} holds no PEM certificate`);
  return pem;
}

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
    // An explicit `tls` wins over the bare TLS a rediss:// URL asks for, so the CA given applies to it too.
    const tls: RedisOptions = connection.tls ? { tls: connection.tls.caFile ? { ca: readCaFile(connection.tls.caFile) } : {} } : {};
    const { tls: _settings, ...where } = connection;
    const redis = 'url' in where ? new Redis(where.url, { ...common, ...tls }) : new Redis({ ...common, ...where, ...tls });
    // Without a listener ioredis prints unhandled 'error' events; failures surface through commands.
    redis.on('error', () => {});
    redis.defineCommand('bsoCreate', { numberOfKeys: 6, lua: CREATE_SESSION });
    redis.defineCommand('bsoUpdate', { numberOfKeys: 4, lua: UPDATE_SESSION });
    // The number of buckets varies per call: the key count is the first argument.
    redis.defineCommand('bsoRate', { lua: RATE_LIMIT });
    redis.defineCommand('bsoReplicas', { numberOfKeys: 1, lua: REPLICA_LEASE });
    redis.defineCommand('bsoQueueJoin', { numberOfKeys: 0, lua: QUEUE_JOIN });
    redis.defineCommand('bsoQueueLeave', { numberOfKeys: 0, lua: QUEUE_LEAVE });
    this.redis = redis as Scripted;
  }

  script(name: ScriptName, keys: string[], args: Array<string | number>): Promise<unknown> {
    if (name === 'rate') return this.redis.bsoRate(keys.length, ...keys, ...args);
    if (name === 'replicas') return this.redis.bsoReplicas(...keys, ...args);
    if (name === 'queueJoin') return this.redis.bsoQueueJoin(...args);
    if (name === 'queueLeave') return this.redis.bsoQueueLeave(...args);
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
