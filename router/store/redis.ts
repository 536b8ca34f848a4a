import { isTerminal, Session } from '../../shared/session.js';
import type { RedisCommands } from './redis-commands.js';
import { applyChange, indexMember } from './transition.js';
import {
  countFleet,
  fleetCounterOf,
  ownerOf,
  type CreateLimits,
  type FleetCounts,
  type CreateResult,
  QUEUE_SERVED_TTL_SEC,
  QUEUE_STALE_MS,
  type QueueState,
  type ListPage,
  type ListQuery,
  type SessionChange,
  type SessionStore,
} from './types.js';

const MAX_CAS_ATTEMPTS = 8;

/**
 * Sessions in Redis, over any client (RedisCommands): a hash per session (`rev`, `data`), a set of
 * sessions holding a slot, and a lexicographic index for newest-first listing. Writes that matter
 * for capacity run as Lua scripts (redis-scripts.ts).
 */
export class RedisSessionStore implements SessionStore {
  private readonly k: {
    active: string;
    index: string;
    fleet: string;
    session: (id: string) => string;
    ownerActive: (o: string) => string;
    ownerIndex: (o: string) => string;
  };

  constructor(private readonly opts: { commands: RedisCommands; keyPrefix: string; retentionSec: number }) {
    const p = opts.keyPrefix;
    this.k = {
      active: `${p}active`,
      index: `${p}index`,
      fleet: `${p}fleet`,
      session: (id) => `${p}s:${id}`,
      ownerActive: (o) => `${p}owner:${o}:active`,
      ownerIndex: (o) => `${p}owner:${o}:index`,
    };
  }

  private get r(): RedisCommands {
    return this.opts.commands;
  }

  async create(session: Session, limits: CreateLimits): Promise<CreateResult> {
    const owner = ownerOf(session);
    const [code, n] = (await this.r.script(
      'create',
      [this.k.active, this.k.session(session.id), this.k.index, this.k.ownerActive(owner), this.k.ownerIndex(owner), this.k.fleet],
      [
        session.id,
        JSON.stringify(session),
        limits.maxSessions,
        indexMember(session),
        limits.maxPerOwner,
        session.cluster,
        limits.ticket ?? '',
        this.opts.keyPrefix,
        limits.now ?? session.createdAt,
        QUEUE_STALE_MS,
        QUEUE_SERVED_TTL_SEC,
      ],
    )) as [number, number];
    if (code === 1) return { ok: true };
    if (code === -1) return { ok: false, reason: 'exists' };
    if (code === -2) return { ok: false, reason: 'quota', active: n };
    if (code === -3) return { ok: false, reason: 'not_head', position: n };
    return { ok: false, reason: 'capacity', active: n };
  }

  async queueTicket(ticket: string, owner: string | null, now: number, ttlSec: number): Promise<QueueState> {
    const [code, value] = (await this.r.script('queueJoin', [], [this.opts.keyPrefix, ticket, owner ?? '', now, QUEUE_STALE_MS, ttlSec])) as [number, number | string];
    if (code === 1) return { state: 'waiting', position: Number(value) };
    if (code === 2) return { state: 'served', sessionId: String(value) };
    return { state: 'gone' };
  }

  async leaveQueue(ticket: string): Promise<void> {
    await this.r.script('queueLeave', [], [this.opts.keyPrefix, ticket]);
  }

  async get(id: string): Promise<Session | null> {
    const data = await this.r.hget(this.k.session(id), 'data');
    return data === null ? null : Session.parse(JSON.parse(data));
  }

  async transition(id: string, change: SessionChange, now: number) {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const [rev, data] = await this.r.hmget(this.k.session(id), ['rev', 'data']);
      if (rev == null || data == null) return null;
      const current = Session.parse(JSON.parse(data));
      const next = applyChange(current, change, now);
      if (next === current) return { session: current, changed: false, previous: current.status };
      const res = Number(
        await this.r.script(
          'update',
          [this.k.session(id), this.k.active, this.k.ownerActive(ownerOf(current)), this.k.fleet],
          [rev, JSON.stringify(next), id, isTerminal(next.status) ? '1' : '0', this.opts.retentionSec, fleetCounterOf(current, next) ?? ''],
        ),
      );
      if (res === 1) return { session: next, changed: true, previous: current.status };
      if (res === -1) return null;
    }
    throw new Error(`session ${id}: too many concurrent updates`);
  }

  async list(q: ListQuery): Promise<ListPage> {
    const items: Session[] = [];
    const index = q.owner === undefined ? this.k.index : this.k.ownerIndex(q.owner);
    let cursor = q.cursor;
    // Filtering by status may skip entries; bound the scan so one call stays cheap.
    const batch = Math.max(q.limit * 2, 50);
    for (let scanned = 0; scanned < q.limit * 20 + 200; scanned += batch) {
      const members = await this.r.zrevrangeByLex(index, cursor ? `(${cursor}` : '+', '-', batch);
      if (members.length === 0) return { items, nextCursor: null };
      const datas = await this.r.hgetMany(
        members.map((m) => this.k.session(m.slice(m.indexOf(':') + 1))),
        'data',
      );
      const gone: string[] = [];
      for (let i = 0; i < members.length; i++) {
        const data = datas[i];
        if (data == null) {
          gone.push(members[i]!);
          continue;
        }
        const s = Session.parse(JSON.parse(data));
        if (q.status && s.status !== q.status) continue;
        items.push(s);
        if (items.length === q.limit) {
          await this.r.zrem(index, gone);
          const more = i < members.length - 1 || members.length === batch;
          return { items, nextCursor: more ? members[i]! : null };
        }
      }
      await this.r.zrem(index, gone);
      cursor = members[members.length - 1];
      if (members.length < batch) return { items, nextCursor: null };
    }
    return { items, nextCursor: cursor ?? null };
  }

  async listActive(): Promise<Session[]> {
    const ids = await this.r.smembers(this.k.active);
    const datas = await this.r.hgetMany(
      ids.map((id) => this.k.session(id)),
      'data',
    );
    return datas.filter((d): d is string => typeof d === 'string').map((d) => Session.parse(JSON.parse(d)));
  }

  activeCount(): Promise<number> {
    return this.r.scard(this.k.active);
  }

  async fleetCounts(): Promise<FleetCounts> {
    const [counters, active] = await Promise.all([this.r.hgetall(this.k.fleet), this.listActive()]);
    return countFleet(counters, active);
  }

  ping(): Promise<void> {
    return this.r.ping();
  }

  close(): Promise<void> {
    return this.r.close();
  }
}
