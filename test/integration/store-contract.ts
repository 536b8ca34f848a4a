import { describe, expect, it } from 'vitest';
import type { Session } from '../../shared/session.js';
import { QUEUE_STALE_MS, type SessionStore } from '../../router/store/types.js';

let seq = 0;
export function newSession(over: Partial<Session> = {}): Session {
  const n = ++seq;
  return {
    id: `sess-${String(n).padStart(4, '0')}-${Math.random().toString(36).slice(2, 8)}`,
    status: 'pending',
    createdAt: 1_000 + n,
    updatedAt: 1_000 + n,
    expiresAt: 1_000_000,
    timeout: 300,
    idleTimeout: 60,
    options: {},
    cluster: 'c1',
    node: 'n1',
    ...over,
  };
}

/**
 * The one behaviour every SessionStore backend must have. `make` returns a fresh, empty store whose
 * clock is `now`; `advance` moves that clock (for retention).
 */
export function storeContract(name: string, make: () => Promise<{ store: SessionStore; advance(ms: number): Promise<void> }>) {
  describe(`SessionStore contract: ${name}`, () => {
    it('creates and reads back a session unchanged', async () => {
      const { store } = await make();
      const s = newSession({ options: { viewport: { width: 800, height: 600 } } });
      expect(await store.create(s, { maxSessions: 10, maxPerOwner: 0 })).toEqual({ ok: true });
      expect(await store.get(s.id)).toEqual(s);
      expect(await store.get('missing-000000')).toBeNull();
      expect(await store.create(s, { maxSessions: 10, maxPerOwner: 0 })).toEqual({ ok: false, reason: 'exists' });
    });

    it('refuses creates beyond capacity and frees a slot on a terminal status', async () => {
      const { store } = await make();
      const a = newSession();
      const b = newSession();
      expect((await store.create(a, { maxSessions: 2, maxPerOwner: 0 })).ok).toBe(true);
      expect((await store.create(b, { maxSessions: 2, maxPerOwner: 0 })).ok).toBe(true);
      expect(await store.create(newSession(), { maxSessions: 2, maxPerOwner: 0 })).toEqual({ ok: false, reason: 'capacity', active: 2 });
      expect(await store.activeCount()).toBe(2);
      await store.transition(a.id, { status: 'running' }, 5000);
      expect(await store.activeCount()).toBe(2);
      await store.transition(a.id, { status: 'terminated' }, 6000);
      expect(await store.activeCount()).toBe(1);
      expect((await store.create(newSession(), { maxSessions: 2, maxPerOwner: 0 })).ok).toBe(true);
    });

    it('is atomic under concurrent creates', async () => {
      const { store } = await make();
      const results = await Promise.all(Array.from({ length: 25 }, () => store.create(newSession(), { maxSessions: 5, maxPerOwner: 0 })));
      expect(results.filter((r) => r.ok)).toHaveLength(5);
      expect(await store.activeCount()).toBe(5);
    });

    it('applies allowed transitions only, and reports whether anything changed', async () => {
      const { store } = await make();
      const s = newSession();
      await store.create(s, { maxSessions: 10, maxPerOwner: 0 });
      const r1 = await store.transition(s.id, { status: 'running', node: 'n9', endpoints: { host: '127.0.0.1', apiPort: 9222, browserWsPath: '/devtools/browser/x' } }, 2000);
      expect(r1).toMatchObject({ changed: true, previous: 'pending', session: { status: 'running', node: 'n9', startedAt: 2000 } });
      const again = await store.transition(s.id, { status: 'running' }, 2500);
      expect(again?.changed).toBe(false);
      const failed = await store.transition(s.id, { status: 'failed', failureReason: 'crash' }, 3000);
      expect(failed).toMatchObject({ changed: true, session: { status: 'failed', failureReason: 'crash', endedAt: 3000 } });
      expect(failed?.session.endpoints).toBeUndefined();
      const back = await store.transition(s.id, { status: 'running' }, 4000);
      expect(back).toMatchObject({ changed: false, session: { status: 'failed' } });
      expect(await store.transition('missing-000000', { status: 'running' }, 1)).toBeNull();
    });

    it('counts the fleet by cluster: created and failed since the start, pending and running now', async () => {
      const { store } = await make();
      expect(await store.fleetCounts()).toEqual([]);
      const a = newSession({ cluster: 'east' });
      const b = newSession({ cluster: 'east' });
      const c = newSession({ cluster: 'west' });
      for (const s of [a, b, c]) await store.create(s, { maxSessions: 10, maxPerOwner: 0 });
      await store.transition(a.id, { status: 'running' }, 2000);
      await store.transition(c.id, { status: 'failed', failureReason: 'x' }, 2000);
      // A failure counts once, however often it is reported; an end that is not a failure counts nowhere.
      await store.transition(c.id, { status: 'failed', failureReason: 'again' }, 2100);
      await store.transition(b.id, { status: 'terminated' }, 2200);
      expect(await store.fleetCounts()).toEqual([
        { cluster: 'east', created: 2, failed: 0, pending: 0, running: 1 },
        { cluster: 'west', created: 1, failed: 1, pending: 0, running: 0 },
      ]);
      await store.create(newSession({ cluster: 'west' }), { maxSessions: 10, maxPerOwner: 0 });
      expect((await store.fleetCounts()).find((f) => f.cluster === 'west')).toEqual({ cluster: 'west', created: 2, failed: 1, pending: 1, running: 0 });
    });

    it('keeps concurrent transitions consistent (exactly one terminal status wins)', async () => {
      const { store } = await make();
      const s = newSession();
      await store.create(s, { maxSessions: 10, maxPerOwner: 0 });
      const results = await Promise.all([
        store.transition(s.id, { status: 'terminated' }, 10),
        store.transition(s.id, { status: 'failed', failureReason: 'x' }, 10),
        store.transition(s.id, { status: 'timed_out' }, 10),
      ]);
      expect(results.filter((r) => r?.changed)).toHaveLength(1);
      expect(await store.activeCount()).toBe(0);
    });

    it('lists newest first with cursor pagination and a status filter', async () => {
      const { store } = await make();
      const made: Session[] = [];
      for (let i = 0; i < 7; i++) {
        const s = newSession();
        made.push(s);
        await store.create(s, { maxSessions: 100, maxPerOwner: 0 });
      }
      await store.transition(made[1]!.id, { status: 'running' }, 9000);
      await store.transition(made[4]!.id, { status: 'running' }, 9000);
      const seen: string[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < 10; page++) {
        const res = await store.list({ limit: 3, cursor });
        seen.push(...res.items.map((s) => s.id));
        if (!res.nextCursor) break;
        cursor = res.nextCursor;
      }
      expect(seen).toEqual(made.map((s) => s.id).reverse());
      const running = await store.list({ limit: 10, status: 'running' });
      expect(running.items.map((s) => s.id)).toEqual([made[4]!.id, made[1]!.id]);
      expect((await store.listActive()).map((s) => s.id).sort()).toEqual(made.map((s) => s.id).sort());
    });

    it('holds each owner to its quota, atomically, and frees the owner slot on a terminal status', async () => {
      const { store } = await make();
      const limits = { maxSessions: 10, maxPerOwner: 2 };
      const results = await Promise.all(Array.from({ length: 6 }, () => store.create(newSession({ owner: 'key_a' }), limits)));
      expect(results.filter((r) => r.ok)).toHaveLength(2);
      expect(results.filter((r) => !r.ok)).toEqual(Array(4).fill({ ok: false, reason: 'quota', active: 2 }));
      // Another owner is not affected; the global limit still counts everyone.
      expect((await store.create(newSession({ owner: 'key_b' }), limits)).ok).toBe(true);
      expect(await store.activeCount()).toBe(3);
      const mine = await store.list({ limit: 10, owner: 'key_a' });
      await store.transition(mine.items[0]!.id, { status: 'terminated' }, 5000);
      expect((await store.create(newSession({ owner: 'key_a' }), limits)).ok).toBe(true);
      expect(await store.create(newSession({ owner: 'key_a' }), { maxSessions: 3, maxPerOwner: 5 })).toEqual({ ok: false, reason: 'capacity', active: 3 });
    });

    it("lists one owner's sessions, newest first, with pagination", async () => {
      const { store } = await make();
      const a: Session[] = [];
      for (let i = 0; i < 5; i++) {
        const s = newSession({ owner: i % 2 ? 'key_b' : 'key_a' });
        if (i % 2 === 0) a.push(s);
        await store.create(s, { maxSessions: 100, maxPerOwner: 0 });
      }
      const first = await store.list({ limit: 2, owner: 'key_a' });
      const second = await store.list({ limit: 2, owner: 'key_a', cursor: first.nextCursor! });
      expect([...first.items, ...second.items].map((s) => s.id)).toEqual(a.map((s) => s.id).reverse());
      expect(second.nextCursor).toBeNull();
      expect((await store.list({ limit: 10, owner: 'key_c' })).items).toEqual([]);
      expect((await store.list({ limit: 10 })).items).toHaveLength(5);
    });

    it('forgets ended sessions after the retention period', async () => {
      const { store, advance } = await make();
      const s = newSession();
      await store.create(s, { maxSessions: 10, maxPerOwner: 0 });
      await store.transition(s.id, { status: 'terminated' }, Date.now());
      expect(await store.get(s.id)).not.toBeNull();
      await advance(2100);
      expect(await store.get(s.id)).toBeNull();
      expect((await store.list({ limit: 10 })).items.map((x) => x.id)).not.toContain(s.id);
    });

    it('queue: FIFO per key, keys take turns; positions say so; only the head ticket takes a slot, and only then is a plain create refused', async () => {
      const { store } = await make();
      const limits = (ticket?: string, now = 10_000) => ({ maxSessions: 10, maxPerOwner: 0, ticket, now });
      const join = (ticket: string, owner: string, now = 10_000) => store.queueTicket(ticket, owner, now, 60);
      for (const [t, o] of [
        ['a1', 'A'],
        ['a2', 'A'],
        ['b1', 'B'],
        ['a3', 'A'],
        ['c1', 'C'],
      ] as const)
        await join(t, o);
      const positions = async () => Object.fromEntries(await Promise.all(['a1', 'a2', 'a3', 'b1', 'c1'].map(async (t) => [t, await store.queueTicket(t, null, 10_000, 60)])));
      expect(await positions()).toEqual({
        a1: { state: 'waiting', position: 1 },
        b1: { state: 'waiting', position: 2 },
        c1: { state: 'waiting', position: 3 },
        a2: { state: 'waiting', position: 4 },
        a3: { state: 'waiting', position: 5 },
      });
      // Slots are free, but they are the queue's: a create without a ticket, or with one not at the head, waits.
      expect(await store.create(newSession({ owner: 'D' }), limits())).toMatchObject({ ok: false, reason: 'capacity' });
      expect(await store.create(newSession({ owner: 'B' }), limits('b1'))).toEqual({ ok: false, reason: 'not_head', position: 2 });
      const served: string[] = [];
      for (const [t, o] of [
        ['a1', 'A'],
        ['b1', 'B'],
        ['c1', 'C'],
        ['a2', 'A'],
        ['a3', 'A'],
      ] as const) {
        const s = newSession({ owner: o });
        expect(await store.create(s, limits(t)), t).toEqual({ ok: true });
        expect(await store.queueTicket(t, o, 10_000, 60)).toEqual({ state: 'served', sessionId: s.id });
        served.push(t);
      }
      expect(served).toEqual(['a1', 'b1', 'c1', 'a2', 'a3']);
      // The queue is empty: plain creates go ahead again.
      expect((await store.create(newSession({ owner: 'D' }), limits())).ok).toBe(true);
      expect(await store.queueTicket('never-joined', null, 10_000, 60)).toEqual({ state: 'gone' });
    });

    it('queue: a full store keeps the head waiting; a waiter that stops polling is dropped at the head; leaving frees the place', async () => {
      const { store } = await make();
      const holder = newSession({ owner: 'H' });
      expect((await store.create(holder, { maxSessions: 1, maxPerOwner: 0 })).ok).toBe(true);
      await store.queueTicket('x1', 'X', 1000, 60);
      await store.queueTicket('y1', 'Y', 1000, 60);
      await store.queueTicket('z1', 'Z', 1000, 60);
      expect(await store.create(newSession({ owner: 'X' }), { maxSessions: 1, maxPerOwner: 0, ticket: 'x1', now: 1000 })).toMatchObject({ ok: false, reason: 'capacity' });
      expect(await store.queueTicket('x1', null, 1000, 60)).toEqual({ state: 'waiting', position: 1 });
      await store.leaveQueue('y1');
      expect(await store.queueTicket('y1', null, 1000, 60)).toEqual({ state: 'gone' });
      expect(await store.queueTicket('z1', 'Z', 1000, 60)).toEqual({ state: 'waiting', position: 2 });
      // x1's waiter goes silent; z1 keeps polling and, past the staleness limit, is first.
      expect(await store.queueTicket('z1', 'Z', 1000 + QUEUE_STALE_MS + 1, 60)).toEqual({ state: 'waiting', position: 1 });
      expect(await store.queueTicket('x1', null, 1000 + QUEUE_STALE_MS + 1, 60)).toEqual({ state: 'gone' });
      await store.transition(holder.id, { status: 'terminated' }, 5000);
      const z = newSession({ owner: 'Z' });
      expect(await store.create(z, { maxSessions: 1, maxPerOwner: 0, ticket: 'z1', now: 1000 + QUEUE_STALE_MS + 2 })).toEqual({ ok: true });
      // A served ticket stays served, whoever leaves.
      await store.leaveQueue('z1');
      expect(await store.queueTicket('z1', 'Z', 1000 + QUEUE_STALE_MS + 3, 60)).toEqual({ state: 'served', sessionId: z.id });
    });

    it('answers ping', async () => {
      const { store } = await make();
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}
