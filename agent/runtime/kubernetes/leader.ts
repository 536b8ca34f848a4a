import type { CoordinationV1Api, V1Lease } from '@kubernetes/client-node';
import { startLoop, withDeadline, type Clock } from '../../../shared/clock.js';
import type { Logger } from '../../../shared/logger.js';
import { statusOf } from './retry.js';

export type LeaderElectionDeps = {
  api: Pick<CoordinationV1Api, 'readNamespacedLease' | 'createNamespacedLease' | 'replaceNamespacedLease'>;
  namespace: string;
  /** One Lease per cluster: its agents compete for it. */
  name: string;
  /** This agent (unique per process: a restarted agent is a new candidate). */
  identity: string;
  leaseDurationMs: number;
  clock: Clock;
  logger: Logger;
};

const CALL_TIMEOUT_MS = 5000;

/** Kubernetes MicroTime: RFC 3339 with six fractional digits (what the apiserver parses). */
export const microTime = (ms: number) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

/**
 * Leader election on a `coordination.k8s.io` Lease, the way client-go does it: try to take or renew
 * every third of the lease; a lease held by another is taken only after its record (holder and renew
 * time) has not changed for a whole lease duration *as this process observed it*, so clocks need not
 * agree; writes carry the resourceVersion, so two candidates never both win; a leader that cannot
 * renew for two thirds of the lease stops acting before anyone else may take over; a leader that
 * stops cleanly hands the lease back at once.
 */
export class LeaderElection {
  private leading = false;
  private lastRenewed = 0;
  private observed: { record: string; at: number } | null = null;
  private loop: { stop(): Promise<void> } | null = null;

  constructor(private readonly deps: LeaderElectionDeps) {}

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.loop ??= startLoop({
      clock: this.deps.clock,
      intervalMs: Math.max(100, Math.floor(this.deps.leaseDurationMs / 3)),
      tick: () => this.tryAcquireOrRenew(),
      onError: (err) => this.deps.logger.warn('leader election: lease not read or written', { err }),
    });
  }

  /** Stops competing; a leader releases the lease so another takes over without waiting it out. */
  async stop(): Promise<void> {
    await this.loop?.stop();
    this.loop = null;
    if (!this.leading) return;
    this.setLeading(false);
    try {
      const lease = await this.call(() => this.deps.api.readNamespacedLease({ name: this.deps.name, namespace: this.deps.namespace }));
      if (lease.spec?.holderIdentity !== this.deps.identity) return;
      await this.call(() =>
        this.deps.api.replaceNamespacedLease({
          name: this.deps.name,
          namespace: this.deps.namespace,
          body: { ...lease, spec: { ...lease.spec, holderIdentity: undefined, leaseDurationSeconds: 1, renewTime: microTime(this.deps.clock.now()) as never } },
        }),
      );
    } catch (err) {
      this.deps.logger.warn('leader election: lease not released; it lapses on its own', { err });
    }
  }

  private call<T>(fn: () => Promise<T>): Promise<T> {
    return withDeadline(this.deps.clock, fn(), CALL_TIMEOUT_MS, { error: () => new Error(`lease call timed out after ${CALL_TIMEOUT_MS} ms`) });
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const { api, name, namespace, identity, clock } = this.deps;
    const now = clock.now();
    const durationSec = Math.ceil(this.deps.leaseDurationMs / 1000);
    if (this.leading && now - this.lastRenewed > (this.deps.leaseDurationMs * 2) / 3) this.setLeading(false);
    let lease: V1Lease;
    try {
      lease = await this.call(() => api.readNamespacedLease({ name, namespace }));
    } catch (err) {
      if (statusOf(err) !== 404) throw err;
      const spec = { holderIdentity: identity, leaseDurationSeconds: durationSec, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 };
      try {
        await this.call(() =>
          api.createNamespacedLease({ namespace, body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: spec as never } }),
        );
      } catch (e) {
        if (statusOf(e) === 409) return; // another candidate created it first
        throw e;
      }
      this.renewed(now);
      return;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    const record = `${holder}|${String(spec.renewTime ?? '')}`;
    if (this.observed?.record !== record) this.observed = { record, at: now };
    const lapsed = !holder || now - this.observed.at > (spec.leaseDurationSeconds ?? durationSec) * 1000;
    if (holder !== identity && !lapsed) {
      if (this.leading) this.setLeading(false);
      return;
    }
    const taking = holder !== identity;
    const body: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: durationSec,
        renewTime: microTime(now) as never,
        ...(taking ? { acquireTime: microTime(now) as never, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
      },
    };
    try {
      await this.call(() => api.replaceNamespacedLease({ name, namespace, body }));
    } catch (err) {
      if (statusOf(err) === 409) return; // someone wrote it since we read it: try again next time
      throw err;
    }
    this.renewed(now);
  }

  private renewed(at: number): void {
    this.lastRenewed = at;
    this.observed = null;
    this.setLeading(true);
  }

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.deps.logger.info(leading ? 'leader election: leading the cluster' : 'leader election: no longer leading', { lease: this.deps.name, identity: this.deps.identity });
  }
}
