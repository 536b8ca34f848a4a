import { BatchV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { request } from 'node:http';
import type { Clock } from '../../../shared/clock.js';
import type { Logger } from '../../../shared/logger.js';
import { Session, type SessionEndpoints } from '../../../shared/session.js';
import type { BrowserHandle, BrowserRuntime } from '../types.js';
import { ANNOTATION_SESSION, APP_LABEL, buildJob, jobName, LABEL_CLUSTER, LABEL_SESSION, type JobSettings } from './job.js';
import { PodWatcher } from './pod-watch.js';
import { podState, type PodState } from './pod-state.js';
import { statusOf, withRetry } from './retry.js';

type Waiter = { onState: (s: PodState) => void };

export type KubernetesRuntimeDeps = {
  kc: KubeConfig;
  settings: JobSettings;
  clock: Clock;
  logger: Logger;
  /** How long a pod may stay unschedulable before its session fails. */
  scheduleTimeoutMs: number;
  /** How long a pod may take to become Ready at all. */
  startTimeoutMs: number;
};

/** Sessions as Kubernetes Jobs; pod state comes from one watch, never from polling the API. */
export class KubernetesRuntime implements BrowserRuntime {
  readonly name = 'kubernetes';
  /** Jobs outlive the agent: a restarted agent adopts them (see recover). */
  readonly keepsSessionsOnShutdown = true;
  private readonly batch: BatchV1Api;
  private readonly watcher: PodWatcher;
  private readonly waiters = new Map<string, Waiter>();
  private readonly exits = new Map<string, (reason: string) => void>();
  private readonly stopping = new Set<string>();

  constructor(private readonly deps: KubernetesRuntimeDeps) {
    this.batch = deps.kc.makeApiClient(BatchV1Api);
    this.watcher = new PodWatcher({
      kc: deps.kc,
      namespace: deps.settings.namespace,
      labelSelector: selectorFor(deps.settings.cluster),
      clock: deps.clock,
      logger: deps.logger,
      onPod: (event, pod) => this.onPod(event, pod),
    });
  }

  async init(): Promise<void> {
    this.watcher.start();
    await this.watcher.synced;
  }

  async close(): Promise<void> {
    await this.watcher.stop();
  }

  async start(session: Session, signal: AbortSignal): Promise<BrowserHandle> {
    const { settings, logger, clock } = this.deps;
    const name = jobName(session.id);
    const started = performance.now();
    await withRetry(
      'create job',
      async () => {
        try {
          await this.batch.createNamespacedJob({ namespace: settings.namespace, body: buildJob(session, settings) });
        } catch (err) {
          if (statusOf(err) !== 409) throw err; // 409: it exists already, which is what we wanted
        }
      },
      { clock, signal },
    );
    logger.info('kubernetes: job created', { session: session.id, job: name, ms: Math.round(performance.now() - started) });
    try {
      const running = await this.awaitRunning(session.id, signal);
      const browserWsPath = await browserPath(running.ip, settings.apiPort, signal);
      const endpoints: SessionEndpoints = { host: running.ip, apiPort: settings.apiPort, uiPort: settings.uiPort, browserWsPath };
      const exited = new Promise<string>((resolve) => this.exits.set(session.id, resolve));
      return { endpoints, exited, node: running.node };
    } catch (err) {
      await this.stop(session.id).catch(() => {});
      throw err;
    }
  }

  async stop(id: string): Promise<void> {
    this.stopping.add(id);
    this.exits.delete(id);
    const started = performance.now();
    await withRetry(
      'delete job',
      async () => {
        try {
          await this.batch.deleteNamespacedJob({ name: jobName(id), namespace: this.deps.settings.namespace, propagationPolicy: 'Background' });
        } catch (err) {
          if (statusOf(err) !== 404) throw err; // 404: already gone
        }
      },
      { clock: this.deps.clock },
    );
    this.deps.logger.info('kubernetes: job deleted', { session: id, ms: Math.round(performance.now() - started) });
  }

  /** Jobs outlive the agent on purpose; nothing to stop here. */
  async stopAll(): Promise<void> {}

  /** Sessions whose Jobs exist, rebuilt from the Jobs' annotations, for a restarted agent to adopt. */
  async recover(): Promise<Session[]> {
    const list = await withRetry('list jobs', () => this.batch.listNamespacedJob({ namespace: this.deps.settings.namespace, labelSelector: selectorFor(this.deps.settings.cluster) }), { clock: this.deps.clock });
    const out: Session[] = [];
    for (const job of list.items) {
      if (job.metadata?.deletionTimestamp) continue;
      const parsed = Session.safeParse(JSON.parse(job.metadata?.annotations?.[ANNOTATION_SESSION] ?? 'null'));
      if (parsed.success) out.push(parsed.data);
      else this.deps.logger.warn('kubernetes: job without a readable session annotation', { job: job.metadata?.name });
    }
    return out;
  }

  private awaitRunning(id: string, signal: AbortSignal): Promise<{ ip: string; node: string }> {
    const { clock } = this.deps;
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason ?? new Error('start aborted'));
      let recheck: ReturnType<Clock['setTimeout']> | undefined;
      const finish = () => {
        this.waiters.delete(id);
        if (recheck !== undefined) clock.clearTimeout(recheck);
        clock.clearTimeout(deadline);
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        finish();
        reject(signal.reason ?? new Error('start aborted'));
      };
      const waiter: Waiter = {
        onState: (s) => {
          if (s.kind === 'running') {
            finish();
            resolve({ ip: s.ip, node: s.node });
          } else if (s.kind === 'failed') {
            finish();
            reject(new Error(s.reason));
          }
        },
      };
      const deadline = clock.setTimeout(() => waiter.onState({ kind: 'failed', reason: `pod not ready within ${this.deps.startTimeoutMs} ms` }), this.deps.startTimeoutMs);
      this.waiters.set(id, waiter);
      signal.addEventListener('abort', onAbort, { once: true });
      // The unschedulable deadline passes without any new event: re-read the cached pod each second.
      const tick = () => {
        const pod = this.podOf(id);
        if (pod) waiter.onState(podState(pod, clock.now(), this.deps.scheduleTimeoutMs));
        if (this.waiters.get(id) === waiter) recheck = clock.setTimeout(tick, 1000);
      };
      tick();
    });
  }

  private podOf(id: string): V1Pod | undefined {
    return this.watcher.pods().find((p) => p.metadata?.labels?.[LABEL_SESSION] === id && !p.metadata?.deletionTimestamp);
  }

  private onPod(event: string, pod: V1Pod): void {
    const id = pod.metadata?.labels?.[LABEL_SESSION];
    if (!id) return;
    const state: PodState = event === 'DELETED' ? { kind: 'failed', reason: 'pod was deleted' } : podState(pod, this.deps.clock.now(), this.deps.scheduleTimeoutMs);
    this.waiters.get(id)?.onState(state);
    if (state.kind === 'failed' && !this.stopping.has(id)) {
      const exit = this.exits.get(id);
      if (exit) {
        this.exits.delete(id);
        exit(state.reason);
      }
    }
  }
}

const selectorFor = (cluster: string) => `app=${APP_LABEL},${LABEL_CLUSTER}=${cluster}`;

/** The browser target's path, from the browser itself (`/json/version`). */
function browserPath(host: string, port: number, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: '/json/version', timeout: 5000, signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          const url = new URL((JSON.parse(Buffer.concat(chunks).toString()) as { webSocketDebuggerUrl: string }).webSocketDebuggerUrl);
          resolve(url.pathname);
        } catch (err) {
          reject(new Error(`browser at ${host}:${port} gave no usable /json/version`, { cause: err }));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`browser at ${host}:${port} did not answer /json/version`)));
    req.on('error', reject);
    req.end();
  });
}
