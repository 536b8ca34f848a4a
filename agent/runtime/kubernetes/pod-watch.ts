import { CoreV1Api, Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { backoffDelay, sleep, type Clock } from '../../../shared/clock.js';
import type { Logger } from '../../../shared/logger.js';
import { withRetry } from './retry.js';

export type PodEvent = 'ADDED' | 'MODIFIED' | 'DELETED';

/**
 * Informer-style pod watch: list, then watch from the list's resourceVersion; keep watching from the
 * last seen version when a watch ends; re-list when the version expired (410); restart with capped,
 * jittered backoff on errors. Never polls. One loop, stopped by `stop()`.
 */
export class PodWatcher {
  private readonly known = new Map<string, V1Pod>();
  private stopped = false;
  private abort: AbortController | null = null;
  private loop: Promise<void> | null = null;
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
  ) {}

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    await this.loop;
  }

  pods(): V1Pod[] {
    return [...this.known.values()];
  }

  private async run(): Promise<void> {
    const core = this.deps.kc.makeApiClient(CoreV1Api);
    const watch = new Watch(this.deps.kc);
    let attempt = 0;
    let rv: string | null = null;
    while (!this.stopped) {
      try {
        if (rv === null) rv = await this.relist(core);
        this.resolveSynced();
        attempt = 0;
        const outcome = await this.watchFrom(watch, rv, (next) => (rv = next));
        if (outcome === 'expired') rv = null;
      } catch (err) {
        if (this.stopped) break;
        const delay = backoffDelay(attempt++, 250, 10_000);
        this.deps.logger.warn('kubernetes: pod watch failed; restarting', { err, delayMs: delay });
        rv = null;
        await sleep(this.deps.clock, delay).catch(() => {});
      }
    }
  }

  private async relist(core: CoreV1Api): Promise<string> {
    const started = performance.now();
    const list = await withRetry('list pods', () => core.listNamespacedPod({ namespace: this.deps.namespace, labelSelector: this.deps.labelSelector }), { clock: this.deps.clock });
    this.deps.logger.debug('kubernetes: listed pods', { count: list.items.length, ms: Math.round(performance.now() - started) });
    const present = new Set<string>();
    for (const pod of list.items) {
      const uid = pod.metadata?.uid ?? '';
      present.add(uid);
      const had = this.known.has(uid);
      this.known.set(uid, pod);
      this.deps.onPod(had ? 'MODIFIED' : 'ADDED', pod);
    }
    for (const [uid, pod] of this.known) {
      if (!present.has(uid)) {
        this.known.delete(uid);
        this.deps.onPod('DELETED', pod);
      }
    }
    return list.metadata?.resourceVersion ?? '0';
  }

  private watchFrom(watch: Watch, rv: string, seen: (rv: string) => void): Promise<'ended' | 'expired'> {
    return new Promise((resolve, reject) => {
      let expired = false;
      watch
        .watch(
          `/api/v1/namespaces/${this.deps.namespace}/pods`,
          { labelSelector: this.deps.labelSelector, resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds: 300 },
          (type: string, obj: V1Pod & { code?: number }) => {
            if (type === 'ERROR') {
              if (obj.code === 410) expired = true;
              this.abort?.abort();
              return;
            }
            const next = obj.metadata?.resourceVersion;
            if (next) seen(next);
            if (type === 'BOOKMARK') return;
            const uid = obj.metadata?.uid ?? '';
            if (type === 'DELETED') this.known.delete(uid);
            else this.known.set(uid, obj);
            this.deps.onPod(type as PodEvent, obj);
          },
          (err: unknown) => {
            if (expired) return resolve('expired');
            if (err && !this.stopped && (err as { name?: string }).name !== 'AbortError') return reject(err);
            resolve('ended');
          },
        )
        .then((ctrl) => {
          this.abort = ctrl;
          if (this.stopped) ctrl.abort();
        }, reject);
    });
  }
}
