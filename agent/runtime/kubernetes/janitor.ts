import type { BatchV1Api, CoordinationV1Api } from '@kubernetes/client-node';
import type { Clock } from '../../../shared/clock.js';
import type { Logger } from '../../../shared/logger.js';
import type { RpcParams, RpcResult } from '../../../shared/tunnel/protocol.js';
import { APP_LABEL, jobName, LABEL_CLUSTER, LABEL_NODE, LABEL_SESSION, LABEL_WARM } from './job.js';
import { statusOf, withRetry } from './retry.js';

/** Where kubelets renew their node's Lease (every 10 s by default). */
const NODE_LEASE_NAMESPACE = 'kube-node-lease';

export type ClusterJanitorDeps = {
  batch: Pick<BatchV1Api, 'listNamespacedJob' | 'deleteNamespacedJob'>;
  coordination: Pick<CoordinationV1Api, 'listNamespacedLease'>;
  namespace: string;
  cluster: string;
  /** A node whose Lease has not been renewed for this long, as this process observed it, is lost. */
  nodeLostAfterMs: number;
  /** Whether this agent leads its cluster now (holds the cluster's Lease). */
  leading: () => boolean;
  /** Asks the router: it fails what is lost and says which Jobs to delete. */
  sync: (params: RpcParams<'cluster.sync'>) => Promise<RpcResult<'cluster.sync'>>;
  clock: Clock;
  logger: Logger;
};

/**
 * The cluster leader's cleanup, one pass at a time: every Job of the cluster and every node that
 * stopped renewing its Lease go to the router, which fails the sessions they take with them and
 * answers which Jobs to delete (ended sessions, lost nodes, Jobs nobody knows); the leader deletes
 * them. Every agent watches node Leases (cheap: one list per pass), so a newly elected leader judges
 * node loss from history it already has rather than from its first look.
 */
export class ClusterJanitor {
  /** Each node Lease's renew time as last seen, and when this process saw it change. */
  private readonly renewals = new Map<string, { renewTime: string; seenAt: number }>();
  /** When the node Leases were last read: a node is judged as of then, never by time spent since
   * (a pass slowed by an overloaded apiserver must not make every node look lost). */
  private observedAt = 0;

  constructor(private readonly deps: ClusterJanitorDeps) {}

  async pass(): Promise<void> {
    const { clock } = this.deps;
    await this.observeNodes();
    if (!this.deps.leading()) return;
    const list = await withRetry(
      'list cluster jobs',
      () => this.deps.batch.listNamespacedJob({ namespace: this.deps.namespace, labelSelector: `app=${APP_LABEL},${LABEL_CLUSTER}=${this.deps.cluster}` }),
      { clock, logger: this.deps.logger },
    );
    const live = list.items.filter((j) => j.metadata?.name && !j.metadata.deletionTimestamp);
    const nodeOf = (j: (typeof live)[number]) => j.metadata?.labels?.[LABEL_NODE] ?? '';
    const sessionJobs = live.filter((j) => j.metadata?.labels?.[LABEL_SESSION]);
    const jobs = sessionJobs.map((j) => ({ id: j.metadata!.labels![LABEL_SESSION]!, node: nodeOf(j) }));
    // A session's Job is named after it, unless it was a warm Job its session claimed.
    const nameOf = new Map(sessionJobs.map((j) => [j.metadata!.labels![LABEL_SESSION]!, j.metadata!.name!]));
    const lostNodes = [...new Set(live.map(nodeOf))].filter((node) => node && this.lost(node));
    if (!this.deps.leading()) return;
    const { delete: doomed } = await this.deps.sync({ jobs, lostNodes });
    if (lostNodes.length) this.deps.logger.warn('cluster leader: nodes lost', { nodes: lostNodes });
    // Warm Jobs are no session's: those on a lost node have no agent left to use or delete them.
    const warmLost = live.filter((j) => j.metadata?.labels?.[LABEL_WARM] && lostNodes.includes(nodeOf(j))).map((j) => j.metadata!.name!);
    for (const name of [...doomed.map((id) => nameOf.get(id) ?? jobName(id)), ...warmLost]) {
      await withRetry(
        'delete job',
        async () => {
          try {
            await this.deps.batch.deleteNamespacedJob({ name, namespace: this.deps.namespace, propagationPolicy: 'Background' });
          } catch (err) {
            if (statusOf(err) !== 404) throw err;
          }
        },
        { clock, logger: this.deps.logger },
      );
    }
    if (doomed.length) this.deps.logger.info('cluster leader: jobs deleted', { sessions: doomed });
    if (warmLost.length) this.deps.logger.info('cluster leader: warm jobs of lost nodes deleted', { jobs: warmLost });
  }

  private async observeNodes(): Promise<void> {
    const now = this.deps.clock.now();
    const leases = await withRetry('list node leases', () => this.deps.coordination.listNamespacedLease({ namespace: NODE_LEASE_NAMESPACE }), {
      clock: this.deps.clock,
      logger: this.deps.logger,
    });
    const present = new Set<string>();
    for (const lease of leases.items) {
      const node = lease.metadata?.name;
      if (!node) continue;
      present.add(node);
      const renewTime = String(lease.spec?.renewTime ?? '');
      const seen = this.renewals.get(node);
      if (!seen || seen.renewTime !== renewTime) this.renewals.set(node, { renewTime, seenAt: now });
    }
    this.observedAt = now;
    // A node whose Lease is gone (the node object was deleted) counts as lost from the moment it went.
    for (const [node, seen] of this.renewals)
      if (!present.has(node) && seen.renewTime !== '') this.renewals.set(node, { renewTime: '', seenAt: now - this.deps.nodeLostAfterMs - 1 });
  }

  private lost(node: string): boolean {
    const seen = this.renewals.get(node);
    if (!seen) return false; // never seen: not judged (a Job pinned to a node that does not exist yet is unschedulable, not lost)
    return this.observedAt - seen.seenAt > this.deps.nodeLostAfterMs;
  }
}
