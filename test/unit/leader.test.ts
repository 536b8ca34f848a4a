import type { V1Lease } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { LeaderElection } from '../../agent/runtime/kubernetes/leader.js';
import { createLogger } from '../../shared/logger.js';
import { ManualClock } from '../helpers/clock.js';

const LEASE_MS = 3000;
const httpError = (code: number) => Object.assign(new Error(`HTTP ${code}`), { code });

/** The apiserver's part of a Lease, in memory: 404 when missing, 409 on a create that loses or a stale resourceVersion. */
class LeaseStore {
  lease: V1Lease | null = null;
  private version = 0;
  partitioned = new Set<string>();

  apiFor(who: string) {
    const guard = () => {
      if (this.partitioned.has(who)) throw httpError(503);
    };
    return {
      readNamespacedLease: async () => {
        guard();
        if (!this.lease) throw httpError(404);
        return structuredClone(this.lease);
      },
      createNamespacedLease: async ({ body }: { body: V1Lease }) => {
        guard();
        if (this.lease) throw httpError(409);
        this.lease = { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++this.version) } };
        return structuredClone(this.lease);
      },
      replaceNamespacedLease: async ({ body }: { body: V1Lease }) => {
        guard();
        if (body.metadata?.resourceVersion !== this.lease?.metadata?.resourceVersion) throw httpError(409);
        this.lease = { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++this.version) } };
        return structuredClone(this.lease);
      },
    } as never;
  }
}

function setup() {
  const clock = new ManualClock();
  const store = new LeaseStore();
  const candidate = (identity: string) =>
    new LeaderElection({
      api: store.apiFor(identity),
      namespace: 'bso',
      name: 'bso-leader-c1',
      identity,
      leaseDurationMs: LEASE_MS,
      clock,
      logger: createLogger({ level: 'silent' }),
    });
  /** Moves time in small steps, letting each tick's calls settle. */
  const run = async (ms: number) => {
    for (let t = 0; t < ms; t += 100) {
      clock.advance(100);
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    }
  };
  /** Two candidates: `a` starts first and leads; `b` joins a second later. */
  const twoCandidates = async () => {
    const a = candidate('a');
    const b = candidate('b');
    a.start();
    await run(1100);
    b.start();
    await run(2000);
    return { a, b };
  };
  return { clock, store, candidate, run, twoCandidates };
}

describe('leader election on a Lease', () => {
  it('one candidate leads; the other waits while the leader renews', async () => {
    const { store, run, twoCandidates } = setup();
    const { a, b } = await twoCandidates();
    await run(LEASE_MS * 3);
    expect([a.isLeader, b.isLeader]).toEqual([true, false]);
    expect(store.lease?.spec?.holderIdentity).toBe('a');
    await a.stop();
    await b.stop();
  });

  it('a leader cut off from the apiserver stops acting within two thirds of the lease; the other takes over only after a whole lease of the record not changing', async () => {
    const { store, run, twoCandidates } = setup();
    const { a, b } = await twoCandidates();
    store.partitioned.add('a');
    const cutAt = 0;
    let aStoppedAt = -1;
    let bLeadsAt = -1;
    for (let t = cutAt; t < LEASE_MS * 4; t += 100) {
      await run(100);
      if (aStoppedAt < 0 && !a.isLeader) aStoppedAt = t + 100;
      if (bLeadsAt < 0 && b.isLeader) bLeadsAt = t + 100;
    }
    expect(aStoppedAt).toBeGreaterThan(0);
    expect(bLeadsAt).toBeGreaterThan(0);
    // The old leader gives up before the new one may start: never two at once.
    expect(aStoppedAt).toBeLessThan(bLeadsAt);
    expect(bLeadsAt).toBeGreaterThanOrEqual(LEASE_MS);
    expect(bLeadsAt).toBeLessThanOrEqual(LEASE_MS + LEASE_MS / 3 + 1000);
    expect(store.lease?.spec).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
    store.partitioned.delete('a');
    await run(LEASE_MS);
    expect([a.isLeader, b.isLeader]).toEqual([false, true]);
    await a.stop();
    await b.stop();
  });

  it('a leader that stops hands the lease back: the other takes it at its next try', async () => {
    const { store, run, twoCandidates } = setup();
    const { a, b } = await twoCandidates();
    await a.stop();
    expect(store.lease?.spec?.holderIdentity).toBeUndefined();
    await run(LEASE_MS / 3 + 200);
    expect(b.isLeader).toBe(true);
    await b.stop();
  });
});
