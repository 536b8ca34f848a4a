import { Redis, type RedisOptions } from 'ioredis';
import { isTerminal, Session } from '../../shared/session.js';
import { CREATE_SESSION, UPDATE_SESSION } from './redis-scripts.js';
import { applyChange, indexMember } from './transition.js';
import type { CreateResult, ListPage, ListQuery, SessionChange, SessionStore } from './types.js';

type ScriptedRedis = Redis & {
  bsoCreate(k1: string, k2: string, k3: string, id: string, json: string, max: number, member: string): Promise<[number, number]>;
  bsoUpdate(k1: string, k2: string, rev: string, json: string, id: string, terminal: string, retention: number): Promise<number>;
};

export type RedisStoreOptions = {
  connection: { url: string } | { host: string; port: number; password?: string };
  keyPrefix: string;
  retentionSec: number;
  commandTimeoutMs?: number;
};

const MAX_CAS_ATTEMPTS = 8;

export class RedisSessionStore implements SessionStore {
  private readonly redis: ScriptedRedis;
  private readonly k: { active: string; index: string; session: (id: string) => string };

  constructor(private readonly opts: RedisStoreOptions) {
    const common: RedisOptions = {
      // Every command is bounded; a dead Redis turns into errors (503 upstream), not hung requests.
      commandTimeout: opts.commandTimeoutMs ?? 2000,
      connectTimeout: 3000,
      maxRetriesPerRequest: 1,
      enableAutoPipelining: true,
      lazyConnect: false,
      retryStrategy: (times) => Math.min(50 * 2 ** times, 2000) + Math.floor(Math.random() * 100),
    };
    const redis = 'url' in opts.connection ? new Redis(opts.connection.url, common) : new Redis({ ...common, ...opts.connection });
    // Without a listener ioredis prints unhandled 'error' events; failures surface through commands.
    redis.on('error', () => {});
    redis.defineCommand('bsoCreate', { numberOfKeys: 3, lua: CREATE_SESSION });
    redis.defineCommand('bsoUpdate', { numberOfKeys: 2, lua: UPDATE_SESSION });
    this.redis = redis as ScriptedRedis;
    const p = opts.keyPrefix;
    this.k = { active: `${p}active`, index: `${p}index`, session: (id) => `${p}s:${id}` };
  }

  async create(session: Session, maxSessions: number): Promise<CreateResult> {
    const [code, active] = await this.redis.bsoCreate(
      this.k.active, this.k.session(session.id), this.k.index,
      session.id, JSON.stringify(session), maxSessions, indexMember(session),
    );
    if (code === 1) return { ok: true };
    if (code === -1) return { ok: false, reason: 'exists' };
    return { ok: false, reason: 'capacity', active };
  }

  async get(id: string): Promise<Session | null> {
    const data = await this.redis.hget(this.k.session(id), 'data');
    return data === null ? null : Session.parse(JSON.parse(data));
  }

  async transition(id: string, change: SessionChange, now: number) {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const [rev, data] = await this.redis.hmget(this.k.session(id), 'rev', 'data');
      if (rev == null || data == null) return null;
      const current = Session.parse(JSON.parse(data));
      const next = applyChange(current, change, now);
      if (next === current) return { session: current, changed: false };
      const res = await this.redis.bsoUpdate(
        this.k.session(id), this.k.active,
        rev, JSON.stringify(next), id, isTerminal(next.status) ? '1' : '0', this.opts.retentionSec,
      );
      if (res === 1) return { session: next, changed: true };
      if (res === -1) return null;
    }
    throw new Error(`session ${id}: too many concurrent updates`);
  }

  async list(q: ListQuery): Promise<ListPage> {
    const items: Session[] = [];
    let cursor = q.cursor;
    // Filtering by status may skip entries; bound the scan so one call stays cheap.
    const batch = Math.max(q.limit * 2, 50);
    for (let scanned = 0; scanned < q.limit * 20 + 200; scanned += batch) {
      const members = await this.redis.zrange(this.k.index, cursor ? `(${cursor}` : '+', '-', 'BYLEX', 'REV', 'LIMIT', 0, batch);
      if (members.length === 0) return { items, nextCursor: null };
      const ids = members.map((m) => m.slice(m.indexOf(':') + 1));
      const pipeline = this.redis.pipeline();
      for (const id of ids) pipeline.hget(this.k.session(id), 'data');
      const datas = (await pipeline.exec()) ?? [];
      const gone: string[] = [];
      for (let i = 0; i < members.length; i++) {
        const [err, data] = datas[i] ?? [null, null];
        if (err) throw err;
        if (data === null) {
          gone.push(members[i]!);
          continue;
        }
        const s = Session.parse(JSON.parse(data as string));
        if (q.status && s.status !== q.status) continue;
        items.push(s);
        if (items.length === q.limit) {
          if (gone.length) await this.redis.zrem(this.k.index, ...gone);
          const more = i < members.length - 1 || members.length === batch;
          return { items, nextCursor: more ? members[i]! : null };
        }
      }
      if (gone.length) await this.redis.zrem(this.k.index, ...gone);
      cursor = members[members.length - 1];
      if (members.length < batch) return { items, nextCursor: null };
    }
    return { items, nextCursor: cursor ?? null };
  }

  async listActive(): Promise<Session[]> {
    const ids = await this.redis.smembers(this.k.active);
    if (ids.length === 0) return [];
    const datas = await this.redis.pipeline(ids.map((id) => ['hget', this.k.session(id), 'data'])).exec();
    const out: Session[] = [];
    for (const [err, data] of datas ?? []) if (!err && typeof data === 'string') out.push(Session.parse(JSON.parse(data)));
    return out;
  }

  async activeCount(): Promise<number> {
    return this.redis.scard(this.k.active);
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
