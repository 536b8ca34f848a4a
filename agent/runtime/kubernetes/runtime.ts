import { BatchV1Api, CoreV1Api, type KubeConfig, type V1Job, type V1Pod } from '@kubernetes/client-node';
import { applyOptionsOverCdp, hasClaimOptions } from '../claim-options.js';
import { CdpWebSocket } from '../cdp-socket.js';
import { createWarmPool, type WarmPool, type WarmPoolMetrics, type WarmPoolSettings } from '../warm-pool.js';
import type { Clock } from '../../../shared/clock.js';
import type { Logger } from '../../../shared/logger.js';
import { Session, type SessionEndpoints } from '../../../shared/session.js';
import { nodeCapacity, sessionRequests } from './capacity.js';
import type { BrowserExit, BrowserHandle, BrowserRuntime, StartContext } from '../types.js';
import { traceIdOf } from '../../../shared/trace.js';
import { imageProfile, type ImageProfile } from './profiles.js';
import {
  ANNOTATION_SESSION,
  APP_LABEL,
  buildJob,
  buildWarmJob,
  jobName,
  jobOfPod,
  LABEL_CLUSTER,
  LABEL_NODE,
  LABEL_SESSION,
  LABEL_WARM,
  sessionAnnotations,
  sessionDeadlineSeconds,
  warmJobName,
  type JobSettings,
} from './job.js';
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
  /** Pods started ahead of their sessions (chromium profile only); absent or size 0: every session creates its Job. */
  warmPool?: { settings: WarmPoolSettings; metrics: WarmPoolMetrics };
};

/** A warm browser's pod, Ready and answering CDP, waiting for a session. */
type WarmPod = { job: string; ip: string; node: string; browserWsPath: string; createdAt: number };

/** How long claiming a warm pod (relabelling it, setting the session's options) may take before a Job is created instead. */
const CLAIM_TIMEOUT_MS = 5000;

/** Sessions as Kubernetes Jobs; pod state comes from one watch, never from polling the API. */
export class KubernetesRuntime implements BrowserRuntime {
  readonly name = 'kubernetes';
  /** Jobs outlive the agent: a restarted agent adopts them (see recover). */
  readonly keepsSessionsOnShutdown = true;
  private readonly batch: BatchV1Api;
  private readonly core: CoreV1Api;
  private readonly watcher: PodWatcher;
  /** Pods being waited for to be Ready, by their Job's name. */
  private readonly waiters = new Map<string, Waiter>();
  /** Each session this runtime holds, with its Job's name (a claimed warm Job keeps its own). */
  private readonly jobs = new Map<string, string>();
  private readonly sessionOfJob = new Map<string, string>();
  /** The agent's own CDP connection to each claimed warm browser, which its session's options ride on. */
  private readonly optionConnections = new Map<string, CdpWebSocket>();
  private readonly pool: WarmPool<WarmPod> | null;
  /** The node's room in sessions, once read (see capacity()); unknown: the scheduler alone judges. */
  private nodeCapacity: number | undefined;
  /** Sessions handed out as running, until they stop or their pod fails (stop() removes them first). */
  private readonly exits = new Map<string, (exit: BrowserExit) => void>();
  /** Where each reached session's browser answers: its image is told before its Job goes. */
  private readonly reached = new Map<string, { host: string; port: number }>();
  private readonly profile: ImageProfile;

  constructor(private readonly deps: KubernetesRuntimeDeps) {
    this.batch = deps.kc.makeApiClient(BatchV1Api);
    this.core = deps.kc.makeApiClient(CoreV1Api);
    this.profile = imageProfile(deps.settings.profile);
    if (deps.warmPool && deps.warmPool.settings.size > 0 && !this.profile.reachWarm) throw new Error(`the ${this.profile.name} profile cannot keep warm pods`);
    this.pool = createWarmPool(deps.warmPool, {
      room: () => this.room(),
      launch: (signal) => this.launchWarm(signal),
      destroy: (pod) => this.deleteJob(pod.job),
      alive: (pod) => this.podStateOf(pod.job)?.kind === 'running',
      clock: deps.clock,
      logger: deps.logger,
    });
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
    if (this.pool) {
      await this.deleteWarmJobsLeftBehind();
      this.pool.start();
    }
  }

  async close(): Promise<void> {
    // The claimed browsers' option overrides end with these; the next agent sets them again when it adopts.
    for (const connection of this.optionConnections.values()) connection.close();
    this.optionConnections.clear();
    await this.watcher.stop();
  }

  async start(session: Session, signal: AbortSignal, context: StartContext = {}): Promise<BrowserHandle> {
    const { settings, logger } = this.deps;
    const name = jobName(session.id);
    const started = performance.now();
    const warm = this.pool?.claim() ?? null;
    if (warm) {
      try {
        const handle = await this.claimWarm(session, warm, signal, context);
        logger.info('kubernetes: warm pod claimed', { session: session.id, job: warm.job, ms: Math.round(performance.now() - started) });
        return handle;
      } catch (err) {
        this.forget(session.id);
        await this.deleteJob(warm.job).catch(() => {});
        if (signal.aborted) throw err;
        logger.warn('kubernetes: a warm pod could not be claimed; creating a Job', { session: session.id, job: warm.job, err });
      }
    }
    this.track(session.id, name);
    // Warm pods give their room to sessions: the router places no more sessions than the node holds.
    try {
      while (this.room() < 0 && (await this.pool?.evict()));
      await this.createJob(buildJob(session, settings, context), signal);
    } catch (err) {
      this.forget(session.id);
      throw err;
    }
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
    if (!this.jobs.has(session.id)) this.track(session.id, jobName(session.id));
    return this.attach(session, signal, true);
  }

  /** Sessions whose pods this agent's watch sees, whether a session of this agent owns them or not. */
  present(): string[] {
    return this.watcher.pods().flatMap((p) => {
      if (p.metadata?.deletionTimestamp) return [];
      const id = p.metadata?.labels?.[LABEL_SESSION] ?? this.sessionOfJob.get(jobOfPod(p.metadata?.labels) ?? '');
      return id ? [id] : [];
    });
  }

  /** Waits for the session's pod to be Ready and its browser to answer (as its image profile judges); on failure the Job goes. */
  private async attach(session: Session, signal: AbortSignal, adopting: boolean): Promise<BrowserHandle> {
    const { settings, clock } = this.deps;
    const id = session.id;
    const startedAt = clock.now();
    try {
      const running = await this.awaitRunning(this.jobs.get(id) ?? jobName(id), signal);
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
        // A claimed warm browser's options lasted only as long as the previous agent's CDP connection: set again.
        if (adopting && this.jobs.get(id) !== jobName(id) && hasClaimOptions(session.options))
          await Promise.race([this.applyOptions(id, running.ip, reached.browserWsPath, session.options, reaching.signal), died]);
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
    // A session this runtime does not hold (one the router said to stop) may still be a claimed warm Job: its pod names it.
    const job = this.jobs.get(id) ?? jobOfPod(this.watcher.pods().find((p) => p.metadata?.labels?.[LABEL_SESSION] === id)?.metadata?.labels) ?? jobName(id);
    const reached = this.reached.get(id);
    this.forget(id);
    if (reached) await this.profile.release(id, reached.host, reached.port);
    const started = performance.now();
    await this.deleteJob(job);
    this.deps.logger.info('kubernetes: job deleted', { session: id, job, ms: Math.round(performance.now() - started) });
  }

  private async createJob(body: V1Job, signal: AbortSignal): Promise<void> {
    await withRetry(
      'create job',
      async () => {
        try {
          await this.batch.createNamespacedJob({ namespace: this.deps.settings.namespace, body });
        } catch (err) {
          if (statusOf(err) !== 409) throw err; // 409: it exists already (an earlier attempt got there), which is what we wanted
        }
      },
      { clock: this.deps.clock, logger: this.deps.logger, signal },
    );
  }

  private async deleteJob(name: string): Promise<void> {
    await withRetry(
      'delete job',
      async () => {
        try {
          await this.batch.deleteNamespacedJob({ name, namespace: this.deps.settings.namespace, propagationPolicy: 'Background' });
        } catch (err) {
          if (statusOf(err) !== 404) throw err; // 404: already gone
        }
      },
      { clock: this.deps.clock, logger: this.deps.logger },
    );
  }

  /** The session is held from here (its Job counts against the node's room, its pod's events reach it). */
  private track(id: string, job: string): void {
    this.jobs.set(id, job);
    this.sessionOfJob.set(job, id);
  }

  /** Everything this runtime keeps for a session, let go (its Job is the caller's to delete). */
  private forget(id: string): void {
    const job = this.jobs.get(id);
    if (job !== undefined) this.sessionOfJob.delete(job);
    this.jobs.delete(id);
    this.exits.delete(id);
    this.reached.delete(id);
    this.optionConnections.get(id)?.close();
    this.optionConnections.delete(id);
  }

  /** Sessions the node can still take, warm pods counted; unbounded while the node's room is unknown. */
  private room(): number {
    return (this.nodeCapacity ?? Infinity) - this.jobs.size - (this.pool?.held ?? 0);
  }

  /** A Job for the pool: ready once its pod is Ready and its browser answers CDP. */
  private async launchWarm(signal: AbortSignal): Promise<WarmPod> {
    const { settings, clock, logger } = this.deps;
    const name = warmJobName();
    const createdAt = clock.now();
    const maxIdleSec = Math.ceil(this.deps.warmPool!.settings.maxIdleMs / 1000);
    await this.createJob(buildWarmJob(name, settings, maxIdleSec), signal);
    try {
      const running = await this.awaitRunning(name, signal);
      const reached = await this.profile.reachWarm!(running.ip, settings.apiPort, signal);
      return { job: name, ip: running.ip, node: running.node, browserWsPath: reached.browserWsPath, createdAt };
    } catch (err) {
      await this.deleteJob(name).catch((e: unknown) => logger.warn('kubernetes: a warm job that did not start could not be deleted', { job: name, err: e }));
      throw err;
    }
  }

  /**
   * Makes a warm pod the session's: its Job and pod are relabelled (only while still warm: the patch
   * tests the warm label, so no two claims can both succeed), the Job takes the session's record and
   * deadline, and the session's options are set over CDP, all at once.
   */
  private async claimWarm(session: Session, warm: WarmPod, signal: AbortSignal, context: StartContext): Promise<BrowserHandle> {
    const { settings, clock, logger } = this.deps;
    const id = session.id;
    const pod = this.podOf(warm.job);
    if (!pod?.metadata?.name || podState(pod, clock.now(), this.deps.scheduleTimeoutMs).kind !== 'running') throw new Error('the warm pod is gone');
    this.track(id, warm.job);
    const exited = new Promise<BrowserExit>((resolve) => this.exits.set(id, resolve));
    const claimOnce = { clock, logger, signal, attempts: 1, timeoutMs: CLAIM_TIMEOUT_MS };
    const stillWarm = { op: 'test', path: labelPath(LABEL_WARM), value: warm.job };
    const relabel = [stillWarm, { op: 'remove', path: labelPath(LABEL_WARM) }, { op: 'add', path: labelPath(LABEL_SESSION), value: id }];
    // The Job's deadline counts from its start: what it has run already, and the session's own.
    const deadline = Math.ceil((clock.now() - warm.createdAt) / 1000) + sessionDeadlineSeconds(session);
    const results = await Promise.allSettled([
      withRetry(
        'claim warm job',
        () =>
          this.batch.patchNamespacedJob({
            name: warm.job,
            namespace: settings.namespace,
            body: [
              ...relabel,
              { op: 'add', path: '/metadata/annotations', value: sessionAnnotations(session, context) },
              { op: 'replace', path: '/spec/activeDeadlineSeconds', value: deadline },
            ],
          }),
        claimOnce,
      ),
      withRetry('claim warm pod', () => this.core.patchNamespacedPod({ name: pod.metadata!.name!, namespace: settings.namespace, body: relabel }), claimOnce),
      hasClaimOptions(session.options) ? this.applyOptions(id, warm.ip, warm.browserWsPath, session.options, signal) : Promise.resolve(),
    ]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (signal.aborted) throw signal.reason ?? new Error('start aborted');
    if (this.podStateOf(warm.job)?.kind !== 'running') throw new Error('the warm pod ended while it was claimed');
    this.reached.set(id, { host: warm.ip, port: settings.apiPort });
    const endpoints: SessionEndpoints = { host: warm.ip, apiPort: settings.apiPort, uiPort: settings.uiPort, profile: this.profile.name, browserWsPath: warm.browserWsPath };
    return { endpoints, exited, node: warm.node };
  }

  /** The session's options over the agent's own CDP connection, which stays open for the session's life (the overrides last while it does). */
  private async applyOptions(id: string, host: string, browserWsPath: string, options: Session['options'], signal: AbortSignal): Promise<void> {
    const { clock, logger, settings } = this.deps;
    const connection = await CdpWebSocket.open(`ws://${host}:${settings.apiPort}${browserWsPath}`, { timeoutMs: CLAIM_TIMEOUT_MS, signal, clock });
    this.optionConnections.set(id, connection);
    await applyOptionsOverCdp(connection, options, { clock, logger, timeoutMs: CLAIM_TIMEOUT_MS });
  }

  /** Warm Jobs a previous agent on this node left: their state is unknown, so they go (the pool starts afresh). */
  private async deleteWarmJobsLeftBehind(): Promise<void> {
    const { clock, logger, settings } = this.deps;
    const list = await withRetry('list warm jobs', () => this.batch.listNamespacedJob({ namespace: settings.namespace, labelSelector: `${selectorFor(settings)},${LABEL_WARM}` }), {
      clock,
      logger,
    });
    const names = list.items.flatMap((j) => (j.metadata?.name && !j.metadata.deletionTimestamp ? [j.metadata.name] : []));
    await Promise.all(names.map((name) => this.deleteJob(name)));
    if (names.length) logger.info('kubernetes: deleted warm jobs an earlier agent left', { jobs: names });
  }

  /** The warm pool's state (null without one), for metrics. */
  warmPool(): { idle: number; held: number; target: number } | null {
    return this.pool?.state() ?? null;
  }

  /** How many sessions this agent's node can hold, from its allocatable resources (see capacity.ts). */
  async capacity(): Promise<number> {
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
    const fits = await nodeCapacity(this.core, settings.node, sessionRequests(pod), { clock, logger: this.deps.logger });
    this.nodeCapacity = fits;
    return fits;
  }

  /** Sessions' Jobs outlive the agent on purpose (the next adopts them); warm ones go with it. */
  async stopAll(): Promise<void> {
    await this.pool?.stop();
  }

  /** Sessions whose Jobs exist, rebuilt from the Jobs' annotations, for a restarted agent to adopt. */
  async recover(): Promise<Session[]> {
    const list = await withRetry('list jobs', () => this.batch.listNamespacedJob({ namespace: this.deps.settings.namespace, labelSelector: selectorFor(this.deps.settings) }), {
      clock: this.deps.clock,
      logger: this.deps.logger,
    });
    const out: Session[] = [];
    for (const job of list.items) {
      // Warm Jobs are the pool's (those a previous agent left went at init).
      if (job.metadata?.deletionTimestamp || job.metadata?.labels?.[LABEL_WARM]) continue;
      const parsed = Session.safeParse(JSON.parse(job.metadata?.annotations?.[ANNOTATION_SESSION] ?? 'null'));
      if (parsed.success) {
        out.push(parsed.data);
        this.track(parsed.data.id, job.metadata!.name!);
      } else this.deps.logger.warn('kubernetes: job without a readable session annotation', { job: job.metadata?.name });
    }
    return out;
  }

  /** Resolves once the pod of Job `job` is Ready; rejects when it fails, on the start timeout, or on abort. */
  private awaitRunning(job: string, signal: AbortSignal): Promise<{ ip: string; node: string }> {
    const { clock } = this.deps;
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason ?? new Error('start aborted'));
      let recheck: ReturnType<Clock['setTimeout']> | undefined;
      const finish = () => {
        this.waiters.delete(job);
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
      this.waiters.set(job, waiter);
      signal.addEventListener('abort', onAbort, { once: true });
      // The unschedulable deadline passes without any new event: re-read the cached pod each second.
      const tick = () => {
        const pod = this.podOf(job);
        if (pod) waiter.onState(podState(pod, clock.now(), this.deps.scheduleTimeoutMs));
        if (this.waiters.get(job) === waiter) recheck = clock.setTimeout(tick, 1000);
      };
      tick();
    });
  }

  /** The pod of Job `job`, unless it is being deleted. */
  private podOf(job: string): V1Pod | undefined {
    return this.watcher.pods().find((p) => jobOfPod(p.metadata?.labels) === job && !p.metadata?.deletionTimestamp);
  }

  private podStateOf(job: string): PodState | undefined {
    const pod = this.podOf(job);
    return pod && podState(pod, this.deps.clock.now(), this.deps.scheduleTimeoutMs);
  }

  private onPod(event: string, pod: V1Pod): void {
    const job = jobOfPod(pod.metadata?.labels);
    if (!job) return;
    const state: PodState = event === 'DELETED' ? { kind: 'failed', reason: 'pod was deleted' } : podState(pod, this.deps.clock.now(), this.deps.scheduleTimeoutMs);
    this.waiters.get(job)?.onState(state);
    const id = this.sessionOfJob.get(job) ?? pod.metadata?.labels?.[LABEL_SESSION];
    if (id && state.kind === 'failed') {
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

/** A label's path in a JSON patch (RFC 6901 escapes `/` as `~1`). */
const labelPath = (label: string) => `/metadata/labels/${label.replace(/~/g, '~0').replace(/\//g, '~1')}`;
