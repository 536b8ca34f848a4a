import type { Session, SessionStatus } from '../../shared/session.js';

export type CreateResult = { ok: true } | { ok: false; reason: 'capacity'; active: number } | { ok: false; reason: 'exists' };

export type SessionChange = Partial<Pick<Session, 'status' | 'node' | 'endpoints' | 'failureReason'>>;

/** The session after the change, whether anything changed, and the status it had before. */
export type TransitionResult = { session: Session; changed: boolean; previous: Session['status'] };

export type ListQuery = { status?: SessionStatus; cursor?: string; limit: number };
export type ListPage = { items: Session[]; nextCursor: string | null };

/**
 * Where sessions live. Every backend passes the one contract suite in test/store-contract.ts.
 * Capacity is reserved and released by the store itself, atomically with the write that needs it,
 * so router replicas sharing a store can never oversubscribe.
 */
export interface SessionStore {
  /** Writes a new session and takes one of `maxSessions` slots, or refuses. */
  create(session: Session, maxSessions: number): Promise<CreateResult>;
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
  ping(): Promise<void>;
  close(): Promise<void>;
}
