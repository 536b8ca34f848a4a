import { canTransition, isTerminal, type Session } from '../../shared/session.js';
import type { SessionChange } from './types.js';

/** Pure: the session after `change`, or the same object when the change is not allowed or is a no-op. */
export function applyChange(current: Session, change: SessionChange, now: number): Session {
  const to = change.status ?? current.status;
  if (!canTransition(current.status, to)) return current;
  if (isTerminal(current.status)) return current;
  const next: Session = { ...current, ...stripUndefined(change), updatedAt: now };
  if (to === 'running' && current.status !== 'running') next.startedAt = now;
  if (isTerminal(to)) {
    next.endedAt = now;
    delete next.endpoints;
  }
  return sameSession(current, next) ? current : next;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function sameSession(a: Session, b: Session): boolean {
  const { updatedAt: _a, ...ra } = a;
  const { updatedAt: _b, ...rb } = b;
  return JSON.stringify(ra) === JSON.stringify(rb);
}

/** Sorts newest first with a stable tiebreak; the same key the Redis index uses. */
export function indexMember(s: Pick<Session, 'createdAt' | 'id'>): string {
  return `${String(s.createdAt).padStart(15, '0')}:${s.id}`;
}
