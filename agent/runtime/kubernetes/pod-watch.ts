import { CoreV1Api, ListWatch, Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { backoffDelay, type Clock, type TimerHandle } from '../../../shared/clock.js';
import type { Logger } from '../../../shared/logger.js';
import { withRetry } from './retry.js';

export type PodEvent = 'ADDED' | 'MODIFIED' | 'DELETED';

/**
 * Pods of one namespace and label selector, kept current by @kubernetes/client-node's `ListWatch`
 * informer (list, watch from the list's resourceVersion, re-list on 410). What it lacks is added
 * here: a restart with capped, jittered backoff after an error (it stops on one), a bounded list
 * call, and `synced`, which resolves after the first successful list.
 */
export class PodWatcher {
  private readonly informer: ListWatch<V1Pod>;
  private stopped = false;
  private attempt = 0;
  private retry: TimerHandle | undefined;
  private resolveSynced!: () => void;
  readonly synced = new Promise<void>((r) => (this.resolveSynced = r));

  constructor(
    private readonly deps: {
      kc: KubeConfig;
      namespace: string;
      labelSelector: string;
      clock: Clock;
      logger: Logger;
      onPod: (event: PodEvent, pod: V1Pod) => void;
    },
  ) {
    const core = deps.kc.makeApiClient(CoreV1Api);
    const list = () =>
      withRetry('list pods', () => core.listNamespacedPod({ namespace: deps.namespace, labelSelector: deps.labelSelector }), { clock: deps.clock, logger: deps.logger });
    this.informer = new ListWatch<V1Pod>(`/api/v1/namespaces/${deps.namespace}/pods`, new Watch(deps.kc), list, false, deps.labelSelector);
    this.informer.on('add', (pod) => deps.onPod('ADDED', pod));
    this.informer.on('update', (pod) => deps.onPod('MODIFIED', pod));
    this.informer.on('delete', (pod) => deps.onPod('DELETED', pod));
    this.informer.on('error', (err) => this.restartLater(err));
  }

  start(): void {
    void this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry !== undefined) this.deps.clock.clearTimeout(this.retry);
    await this.informer.stop();
  }

  pods(): readonly V1Pod[] {
    return this.informer.list(this.deps.namespace);
  }

  private async run(): Promise<void> {
    // ListWatch.start() clears its own stopped flag: a retry that fires after stop() must not get there.
    if (this.stopped) return;
    const failedBefore = this.attempt;
    try {
      await this.informer.start();
    } catch (err) {
      // Thrown before any request went out (e.g. credentials that cannot be read): retried like the rest.
      return this.restartLater(err);
    }
    // An error during start was reported through 'error' (and a retry scheduled); otherwise it listed.
    if (this.attempt === failedBefore && !this.stopped) {
      this.attempt = 0;
      this.resolveSynced();
    }
  }

  private restartLater(err: unknown): void {
    if (this.stopped) return;
    // One failure can be reported twice (the watch's error, then its end): one retry, not two.
    if (this.retry !== undefined) this.deps.clock.clearTimeout(this.retry);
    const delayMs = backoffDelay(this.attempt++, 250, 10_000);
    this.deps.logger.warn('kubernetes: pod watch failed; restarting', { err, delayMs });
    this.retry = this.deps.clock.setTimeout(() => {
      this.retry = undefined;
      void this.run();
    }, delayMs);
  }
}
