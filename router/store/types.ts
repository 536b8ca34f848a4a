import type { Session, SessionStatus } from '../../shared/session.js';

export type CreateResult = { ok: true } | { ok: false; reason: 'capacity'; active: number } | { ok: false; reason: 'quota'; active: number } | { ok: false; reason: 'exists' };

/** Slots a create may take: `maxSessions` overall and `maxPerOwner` for the session's owner (0: no quota). */
export type CreateLimits = { maxSessions: number; maxPerOwner: number };

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
