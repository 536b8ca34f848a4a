import { isTerminal, type Session } from '../../shared/session.js';
import { MemoryQueue } from './memory-queue.js';
import { applyChange, indexMember } from './transition.js';
import {
  countFleet,
  fleetCounterOf,
  ownerOf,
  type CreateLimits,
  type FleetCounts,
  type CreateResult,
  type QueueState,
  type ListPage,
  type ListQuery,
  type SessionChange,
  type SessionStore,
} from './types.js';

type Entry = { session: Session; expiresAt: number | null };

/** Single-process store for development and `npm start`; same contract as Redis, no sharing. */
export class MemorySessionStore implements SessionStore {
  private readonly entries = new Map<string, Entry>();
  private readonly counters: Record<string, number> = {};
  private readonly queue = new MemoryQueue();

  constructor(private readonly deps: { retentionSec: number; now: () => number }) {}

  async create(session: Session, limits: CreateLimits): Promise<CreateResult> {
    this.sweep();
    if (this.entries.has(session.id)) return { ok: false, reason: 'exists' };
    const active = this.countActive();
    const gate = this.queue.gate(limits.ticket, limits.now ?? session.createdAt);
    if (gate?.reason === 'not_head') return { ok: false, reason: 'not_head', position: gate.position };
    if (gate) return { ok: false, reason: 'capacity', active };
    if (active >= limits.maxSessions) return { ok: false, reason: 'capacity', active };
    if (limits.maxPerOwner > 0) {
      const mine = this.countActive(ownerOf(session));
      if (mine >= limits.maxPerOwner) return { ok: false, reason: 'quota', active: mine };
    }
    this.entries.set(session.id, { session: structuredClone(session), expiresAt: null });
    this.count(`created:${session.cluster}`);
    if (limits.ticket !== undefined) this.queue.served(limits.ticket, session.id, limits.now ?? session.createdAt);
    return { ok: true };
  }

  async queueTicket(ticket: string, owner: string | null, now: number, ttlSec: number): Promise<QueueState> {
    return this.queue.join(ticket, owner, now, ttlSec);
  }

  async leaveQueue(ticket: string): Promise<void> {
    this.queue.leave(ticket);
  }

  async get(id: string): Promise<Session | null> {
    const e = this.live(id);
    return e ? structuredClone(e.session) : null;
  }

  async transition(id: string, change: SessionChange, now: number) {
    const e = this.live(id);
    if (!e) return null;
    const previous = e.session.status;
    const next = applyChange(e.session, change, now);
    if (next === e.session) return { session: structuredClone(e.session), changed: false, previous };
    const counter = fleetCounterOf(e.session, next);
    if (counter) this.count(counter);
    e.session = next;
    if (isTerminal(next.status)) e.expiresAt = this.deps.now() + this.deps.retentionSec * 1000;
    return { session: structuredClone(next), changed: true, previous };
  }

  async list(q: ListQuery): Promise<ListPage> {
    this.sweep();
    const sorted = [...this.entries.values()]
      .map((e) => e.session)
      .filter((s) => q.owner === undefined || ownerOf(s) === q.owner)
      .sort((a, b) => (indexMember(a) < indexMember(b) ? 1 : -1));
    const after = q.cursor ? sorted.filter((s) => indexMember(s) < q.cursor!) : sorted;
    const matching = q.status ? after.filter((s) => s.status === q.status) : after;
    const items = matching.slice(0, q.limit);
    const nextCursor = matching.length > q.limit ? indexMember(items[items.length - 1]!) : null;
    return { items: structuredClone(items), nextCursor };
  }

  async listActive(): Promise<Session[]> {
    return [...this.entries.values()].filter((e) => !isTerminal(e.session.status)).map((e) => structuredClone(e.session));
  }

  async activeCount(): Promise<number> {
    return this.countActive();
  }

  async fleetCounts(): Promise<FleetCounts> {
    return countFleet(this.counters, await this.listActive());
  }

  async ping(): Promise<void> {}

  private count(counter: string): void {
    this.counters[counter] = (this.counters[counter] ?? 0) + 1;
  }
  async close(): Promise<void> {}

  private countActive(owner?: string): number {
    let n = 0;
    for (const e of this.entries.values()) if (!isTerminal(e.session.status) && (owner === undefined || ownerOf(e.session) === owner)) n++;
    return n;
  }

  private live(id: string): Entry | undefined {
    const e = this.entries.get(id);
    if (e && e.expiresAt !== null && e.expiresAt <= this.deps.now()) {
      this.entries.delete(id);
      return undefined;
    }
    return e;
  }

  private sweep(): void {
    const now = this.deps.now();
    for (const [id, e] of this.entries) if (e.expiresAt !== null && e.expiresAt <= now) this.entries.delete(id);
  }
}
