import { BatchV1Api, CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { Clock } from '../../../shared/clock.js';
import type { Logger } from '../../../shared/logger.js';
import { Session, type SessionEndpoints } from '../../../shared/session.js';
import { nodeCapacity, sessionRequests } from './capacity.js';
import type { BrowserExit, BrowserHandle, BrowserRuntime, StartContext } from '../types.js';
import { traceIdOf } from '../../../shared/trace.js';
import { imageProfile, type ImageProfile } from './profiles.js';
import { ANNOTATION_SESSION, APP_LABEL, buildJob, jobName, LABEL_CLUSTER, LABEL_NODE, LABEL_SESSION, type JobSettings } from './job.js';
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
  /** Sessions handed out as running, until they stop or their pod fails (stop() removes them first). */
  private readonly exits = new Map<string, (exit: BrowserExit) => void>();
  /** Where each reached session's browser answers: its image is told before its Job goes. */
  private readonly reached = new Map<string, { host: string; port: number }>();
  private readonly profile: ImageProfile;

  constructor(private readonly deps: KubernetesRuntimeDeps) {
    this.batch = deps.kc.makeApiClient(BatchV1Api);
    this.profile = imageProfile(deps.settings.profile);
    this.watcher = new PodWatcher({
      kc: deps.kc,
      namespace: deps.settings.namespace,
      labelSelector: selectorFor(deps.settings),
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

  async start(session: Session, signal: AbortSignal, context: StartContext = {}): Promise<BrowserHandle> {
    const { settings, logger, clock } = this.deps;
    const name = jobName(session.id);
    const started = performance.now();
    await withRetry(
      'create job',
      async () => {
        try {
          await this.batch.createNamespacedJob({ namespace: settings.namespace, body: buildJob(session, settings, context) });
        } catch (err) {
          if (statusOf(err) !== 409) throw err; // 409: it exists already, which is what we wanted
        }
      },
      { clock, logger, signal },
    );
    logger.info('kubernetes: job created', {
      session: session.id,
      job: name,
      ms: Math.round(performance.now() - started),
      ...(context.traceparent ? { traceId: traceIdOf(context.traceparent) } : {}),
    });
    return this.attach(session, signal, false);
  }

  /** A Job that outlived the previous agent: wait for its pod as for a new one, without creating it. */
  adopt(session: Session, signal: AbortSignal): Promise<BrowserHandle> {
    return this.attach(session, signal, true);
  }

  /** Sessions whose pods this agent's watch sees, whether a session of this agent owns them or not. */
  present(): string[] {
    return this.watcher
      .pods()
      .flatMap((p) => (p.metadata?.deletionTimestamp ? [] : [p.metadata?.labels?.[LABEL_SESSION] ?? '']))
      .filter(Boolean);
  }

  /** Waits for the session's pod to be Ready and its browser to answer (as its image profile judges); on failure the Job goes. */
  private async attach(session: Session, signal: AbortSignal, adopting: boolean): Promise<BrowserHandle> {
    const { settings, clock } = this.deps;
    const id = session.id;
    const startedAt = clock.now();
    try {
      const running = await this.awaitRunning(id, signal);
      this.reached.set(id, { host: running.ip, port: settings.apiPort });
      // The pod's exit is watched from here on: a browser that dies while its image is being reached fails the start.
      const exited = new Promise<BrowserExit>((resolve) => this.exits.set(id, resolve));
      const left = Math.max(1000, this.deps.startTimeoutMs - (clock.now() - startedAt));
      const reaching = new AbortController();
      const stopReaching = () => reaching.abort(signal.reason);
      signal.addEventListener('abort', stopReaching, { once: true });
      const died = exited.then((e) => {
        reaching.abort(new Error(e.reason));
        throw new Error(e.reason);
      });
      died.catch(() => {});
      let reached;
      try {
        reached = await Promise.race([this.profile.reach(session, running.ip, settings.apiPort, { adopting, timeoutMs: left, signal: reaching.signal, clock }), died]);
      } finally {
        signal.removeEventListener('abort', stopReaching);
      }
      const endpoints: SessionEndpoints = { host: running.ip, apiPort: settings.apiPort, uiPort: settings.uiPort, profile: this.profile.name, ...reached };
      return { endpoints, exited, node: running.node };
    } catch (err) {
      await this.stop(id).catch(() => {});
      throw err;
    }
  }

  async stop(id: string): Promise<void> {
    this.exits.delete(id);
    const reached = this.reached.get(id);
    this.reached.delete(id);
    if (reached) await this.profile.release(id, reached.host, reached.port);
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
      { clock: this.deps.clock, logger: this.deps.logger },
    );
    this.deps.logger.info('kubernetes: job deleted', { session: id, ms: Math.round(performance.now() - started) });
  }

  /** How many sessions this agent's node can hold, from its allocatable resources (see capacity.ts). */
  capacity(): Promise<number> {
    const { settings, clock } = this.deps;
    const probe: Session = {
      id: 'capacity-probe',
      status: 'pending',
      createdAt: 0,
      updatedAt: 0,
      expiresAt: 0,
      timeout: 1,
      idleTimeout: 1,
      options: {},
      cluster: settings.cluster,
      node: settings.node,
    };
    const pod: V1Pod = { spec: buildJob(probe, settings).spec!.template.spec };
    return nodeCapacity(this.deps.kc.makeApiClient(CoreV1Api), settings.node, sessionRequests(pod), { clock, logger: this.deps.logger });
  }

  /** Jobs outlive the agent on purpose; nothing to stop here. */
  async stopAll(): Promise<void> {}

  /** Sessions whose Jobs exist, rebuilt from the Jobs' annotations, for a restarted agent to adopt. */
  async recover(): Promise<Session[]> {
    const list = await withRetry('list jobs', () => this.batch.listNamespacedJob({ namespace: this.deps.settings.namespace, labelSelector: selectorFor(this.deps.settings) }), {
      clock: this.deps.clock,
      logger: this.deps.logger,
    });
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
    if (state.kind === 'failed') {
      this.reached.delete(id);
      const exit = this.exits.get(id);
      if (exit) {
        this.exits.delete(id);
        exit({ clean: state.clean === true, reason: state.reason });
      }
    }
  }
}

/**
 * This agent's Jobs and pods: its cluster's, on its node. By label rather than by `spec.nodeName`,
 * because a pod the scheduler has not placed yet has no node, and the agent must see it to tell that
 * it cannot be scheduled.
 */
const selectorFor = (s: Pick<JobSettings, 'cluster' | 'node'>) => `app=${APP_LABEL},${LABEL_CLUSTER}=${s.cluster},${LABEL_NODE}=${s.node}`;
