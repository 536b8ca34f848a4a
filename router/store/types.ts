import type { Session, SessionStatus } from '../../shared/session.js';

export type CreateResult =
  | { ok: true }
  | { ok: false; reason: 'capacity'; active: number }
  | { ok: false; reason: 'quota'; active: number }
  | { ok: false; reason: 'exists' }
  /** The ticket is not at the head of the queue (position 0: not in the queue at all). */
  | { ok: false; reason: 'not_head'; position: number };

/** A queue ticket as its waiter sees it: where it stands, the session it got, or not in the queue. */
export type QueueState = { state: 'waiting'; position: number } | { state: 'served'; sessionId: string } | { state: 'gone' };

/** A waiter that has not polled for this long is dropped when it reaches the head: its router died and it did not ask again through another (a client that disconnects leaves at once). */
export const QUEUE_STALE_MS = 10_000;
/** How long a served ticket remembers its session, for a waiter that asks again after its router died. */
export const QUEUE_SERVED_TTL_SEC = 300;

/** Slots a create may take: `maxSessions` overall and `maxPerOwner` for the session's owner (0: no quota).
 * `ticket`: the create is the queue's waiter with this ticket (it may take a slot only at the head). */
export type CreateLimits = { maxSessions: number; maxPerOwner: number; ticket?: string; now?: number };

/** Sessions without an owner (written before keys existed) belong to the anonymous caller. */
export const ownerOf = (s: Session): string => s.owner ?? 'anonymous';

export type SessionChange = Partial<Pick<Session, 'status' | 'node' | 'endpoints' | 'failureReason'>>;

/** The session after the change, whether anything changed, and the status it had before. */
export type TransitionResult = { session: Session; changed: boolean; previous: Session['status'] };

/**
 * The whole fleet's sessions by cluster, for every router's /metrics: `created` and `failed` count
 * since the store began (Prometheus counters), `pending` and `running` are now.
 */
export type FleetCounts = Array<{ cluster: string; created: number; failed: number; pending: number; running: number }>;

/** `owner`: only that key's sessions (what a `user` key sees); unset lists all (admins). */
export type ListQuery = { status?: SessionStatus; cursor?: string; limit: number; owner?: string };
export type ListPage = { items: Session[]; nextCursor: string | null };

/**
 * Where sessions live. Every backend passes the one contract suite in test/store-contract.ts.
 * Capacity is reserved and released by the store itself, atomically with the write that needs it,
 * so router replicas sharing a store can never oversubscribe.
 */
export interface SessionStore {
  /** Writes a new session and takes a slot within both limits, atomically, or refuses. */
  create(session: Session, limits: CreateLimits): Promise<CreateResult>;
  get(id: string): Promise<Session | null>;
  /**
   * Applies `change` when the status transition is allowed (see shared/session.ts). A terminal status
   * releases the slot and starts the retention clock. Returns null for an unknown id.
   */
  transition(id: string, change: SessionChange, now: number): Promise<TransitionResult | null>;
  /** Newest first. */
  list(query: ListQuery): Promise<ListPage>;
  /** Sessions holding a slot (not terminal). */
  listActive(): Promise<Session[]>;
  activeCount(): Promise<number>;
  fleetCounts(): Promise<FleetCounts>;
  /**
   * The fair queue for slots (FIFO per owner, owners taking turns). `owner` given: joins (or, for a
   * ticket already in, refreshes it: a waiter polls this way); omitted: only reads. A create with the
   * ticket (`CreateLimits.ticket`) takes the head's slot and marks the ticket served.
   */
  queueTicket(ticket: string, owner: string | null, now: number, ttlSec: number): Promise<QueueState>;
  /** Leaves the queue (a served ticket stays served). */
  leaveQueue(ticket: string): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Counts per cluster from counters (`created:<cluster>`, `failed:<cluster>`) and the active sessions. */
export function countFleet(counters: Record<string, string | number>, active: Session[]): FleetCounts {
  const by = new Map<string, FleetCounts[number]>();
  const of = (cluster: string) => {
    let c = by.get(cluster);
    if (!c) by.set(cluster, (c = { cluster, created: 0, failed: 0, pending: 0, running: 0 }));
    return c;
  };
  for (const [field, value] of Object.entries(counters)) {
    const [kind, cluster] = [field.slice(0, field.indexOf(':')), field.slice(field.indexOf(':') + 1)];
    if ((kind === 'created' || kind === 'failed') && cluster) of(cluster)[kind] = Number(value);
  }
  for (const s of active) if (s.status === 'pending' || s.status === 'running') of(s.cluster)[s.status]++;
  return [...by.values()].sort((a, b) => (a.cluster < b.cluster ? -1 : 1));
}

/** The counter a transition adds one to, if any: a session's first (and only) failure. */
export const fleetCounterOf = (previous: Session, next: Session): string | null => (next.status === 'failed' && previous.status !== 'failed' ? `failed:${next.cluster}` : null);
