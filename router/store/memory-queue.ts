import { QUEUE_SERVED_TTL_SEC, QUEUE_STALE_MS, type QueueState } from './types.js';

type Ticket = { owner: string; seen: number; served?: string; expiresAt: number };

/**
 * The fair queue of the memory store, the same rules as the Redis scripts (redis-scripts.ts,
 * QUEUE_HELPERS): owners in a rotation, each with its tickets in arrival order; the head is the first
 * ticket of the first owner; a served owner goes to the back; silent waiters are dropped at the head.
 */
export class MemoryQueue {
  private readonly owners: string[] = [];
  private readonly byOwner = new Map<string, string[]>();
  private readonly tickets = new Map<string, Ticket>();

  join(ticket: string, owner: string | null, now: number, ttlSec: number): QueueState {
    this.prune(now);
    const t = this.live(ticket, now);
    if (t?.served) return { state: 'served', sessionId: t.served };
    let entry = t;
    if (!entry) {
      if (owner === null) return { state: 'gone' };
      entry = { owner, seen: now, expiresAt: 0 };
      this.tickets.set(ticket, entry);
      const list = this.byOwner.get(owner) ?? [];
      list.push(ticket);
      this.byOwner.set(owner, list);
      if (list.length === 1) this.owners.push(owner);
    }
    entry.seen = now;
    entry.expiresAt = now + ttlSec * 1000;
    const position = this.position(entry.owner, ticket);
    if (position === null) {
      this.tickets.delete(ticket);
      return { state: 'gone' };
    }
    return { state: 'waiting', position };
  }

  /** Before a create: null when it may go ahead, else why not (the slot is the queue's, or the ticket is not at the head). */
  gate(ticket: string | undefined, now: number): { reason: 'capacity' } | { reason: 'not_head'; position: number } | null {
    this.prune(now);
    const headOwner = this.owners[0];
    if (ticket === undefined) return headOwner === undefined ? null : { reason: 'capacity' };
    const t = this.live(ticket, now);
    if (!t || t.served) return { reason: 'not_head', position: 0 };
    if (t.owner !== headOwner || this.byOwner.get(t.owner)?.[0] !== ticket) return { reason: 'not_head', position: this.position(t.owner, ticket) ?? 0 };
    return null;
  }

  /** The head's ticket got its session: its owner goes to the back of the rotation. */
  served(ticket: string, sessionId: string, now: number): void {
    const t = this.tickets.get(ticket)!;
    const list = this.byOwner.get(t.owner)!;
    list.shift();
    this.owners.shift();
    if (list.length) this.owners.push(t.owner);
    else this.byOwner.delete(t.owner);
    t.served = sessionId;
    t.expiresAt = now + QUEUE_SERVED_TTL_SEC * 1000;
  }

  leave(ticket: string): void {
    const t = this.tickets.get(ticket);
    if (!t || t.served) return;
    this.tickets.delete(ticket);
    this.remove(t.owner, ticket);
  }

  private remove(owner: string, ticket: string): void {
    const list = this.byOwner.get(owner) ?? [];
    const at = list.indexOf(ticket);
    if (at !== -1) list.splice(at, 1);
    if (list.length === 0) {
      this.byOwner.delete(owner);
      const o = this.owners.indexOf(owner);
      if (o !== -1) this.owners.splice(o, 1);
    }
  }

  private live(ticket: string, now: number): Ticket | undefined {
    const t = this.tickets.get(ticket);
    if (t && t.expiresAt <= now) {
      this.tickets.delete(ticket);
      return undefined;
    }
    return t;
  }

  private prune(now: number): void {
    for (;;) {
      const owner = this.owners[0];
      if (owner === undefined) return;
      const head = this.byOwner.get(owner)?.[0];
      if (head === undefined) {
        this.owners.shift();
        continue;
      }
      const t = this.live(head, now);
      if (t && t.seen >= now - QUEUE_STALE_MS) return;
      this.tickets.delete(head);
      this.remove(owner, head);
    }
  }

  private position(owner: string, ticket: string): number | null {
    const mine = this.byOwner.get(owner)?.indexOf(ticket) ?? -1;
    if (mine === -1) return null;
    let position = 1;
    let before = true;
    for (const other of this.owners) {
      if (other === owner) {
        before = false;
        position += mine;
      } else position += Math.min(this.byOwner.get(other)?.length ?? 0, before ? mine + 1 : mine);
    }
    return position;
  }
}
