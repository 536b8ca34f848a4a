import { startLoop, type Clock, type TimerHandle } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import { isTerminal, type Session, type SessionEndpoints, type SessionReport, type SessionStatus } from '../shared/session.js';
import type { AgentMetrics } from './metrics.js';
import type { BrowserRuntime } from './runtime/types.js';

type StopReason = 'deleted' | 'timed_out' | 'orphaned' | 'idle' | 'shutdown';

type Managed = {
  session: Session;
  status: SessionStatus;
  abort: AbortController;
  endpoints?: SessionEndpoints;
  lastActivity: number;
  hardTimer?: TimerHandle;
  started: Promise<SessionReport>;
  closeStreams: Set<(code: number, reason: string) => void>;
  failureReason?: string;
  node?: string;
  startedAt?: number;
};

export type SessionManagerDeps = {
  runtime: BrowserRuntime;
  clock: Clock;
  logger: Logger;
  metrics: AgentMetrics;
  nodeName: string;
  /** Delivers a status change to the router (queued and retried by the caller). */
  report: (r: SessionReport) => void;
};

const CLOSE_REASON: Record<StopReason, [SessionStatus, string]> = {
  deleted: ['terminated', 'session deleted'],
  orphaned: ['terminated', 'session no longer exists'],
  shutdown: ['terminated', 'agent shutting down'],
  timed_out: ['timed_out', 'session timeout reached'],
  idle: ['timed_out', 'session idle timeout reached'],
};

/** The agent's sessions: start, deadlines (hard and idle), health, stop. */
export class SessionManager {
  private readonly sessions = new Map<string, Managed>();

  constructor(private readonly deps: SessionManagerDeps) {}

  start(session: Session): Promise<SessionReport> {
    const existing = this.sessions.get(session.id);
    if (existing) return existing.started; // a retried start is answered by the first one
    const { clock, metrics } = this.deps;
    const m: Managed = {
      session,
      status: 'pending',
      abort: new AbortController(),
      lastActivity: clock.now(),
      closeStreams: new Set(),
      started: Promise.resolve(null as never),
    };
    this.sessions.set(session.id, m);
    metrics.sessionStarted();
    const createdAt = clock.now();
    m.hardTimer = clock.setTimeout(() => void this.stop(session.id, 'timed_out'), Math.max(0, session.expiresAt - clock.now()));
    m.started = this.deps.runtime.start(session, m.abort.signal).then(
      (handle) => {
        if (m.status !== 'pending') {
          void this.deps.runtime.stop(session.id);
          return this.reportOf(m);
        }
        m.endpoints = handle.endpoints;
        m.node = handle.node;
        m.lastActivity = clock.now();
        m.startedAt = clock.now();
        this.setStatus(m, 'running');
        metrics.observeReady((clock.now() - createdAt) / 1000);
        void handle.exited.then((reason) => this.crashed(session.id, reason));
        return this.reportOf(m);
      },
      (err: unknown) => {
        if (m.status === 'pending') this.fail(m, `browser failed to start: ${(err as Error).message}`);
        return this.reportOf(m);
      },
    );
    return m.started;
  }

  async stop(id: string, why: StopReason): Promise<boolean> {
    const m = this.sessions.get(id);
    if (!m) return false;
    if (!isTerminal(m.status)) {
      const [status, reason] = CLOSE_REASON[why];
      this.deps.logger.info('stopping session', { session: id, why });
      m.abort.abort(new Error(reason));
      this.setStatus(m, status, why === 'idle' ? 'idle timeout' : undefined);
      for (const close of m.closeStreams) close(1001, reason);
    }
    // A start still in flight sees the abort and kills what it launched; wait for that too.
    await m.started;
    await this.deps.runtime.stop(id);
    this.forget(id);
    return true;
  }

  /** The running browser of a session, for the proxy; null when it is not running here. */
  endpoints(id: string): SessionEndpoints | null {
    const m = this.sessions.get(id);
    return m && m.status === 'running' ? (m.endpoints ?? null) : null;
  }

  touch(id: string): void {
    const m = this.sessions.get(id);
    if (m) m.lastActivity = this.deps.clock.now();
  }

  /** Lets the proxy close a session's streams with a reason when the session ends. */
  trackStream(id: string, close: (code: number, reason: string) => void): () => void {
    const m = this.sessions.get(id);
    if (!m) return () => {};
    m.closeStreams.add(close);
    return () => m.closeStreams.delete(close);
  }

  ids(): string[] {
    return [...this.sessions.keys()];
  }

  /** Running sessions as the agent knows them, for a router that has to rebuild its records. */
  snapshots(): Session[] {
    return [...this.sessions.values()]
      .filter((m) => m.status === 'running')
      .map((m) => ({ ...m.session, status: 'running' as const, node: m.node ?? this.deps.nodeName, endpoints: m.endpoints, startedAt: m.startedAt }));
  }

  running(): Array<{ id: string; endpoints: SessionEndpoints }> {
    return [...this.sessions.values()].filter((m) => m.status === 'running' && m.endpoints).map((m) => ({ id: m.session.id, endpoints: m.endpoints! }));
  }

  /** Ends sessions idle longer than their idle timeout; run it on a loop. */
  sweepIdle(): void {
    const now = this.deps.clock.now();
    for (const m of this.sessions.values()) {
      if (m.status === 'running' && now - m.lastActivity > m.session.idleTimeout * 1000) void this.stop(m.session.id, 'idle');
    }
  }

  startIdleLoop(intervalMs = 1000) {
    return startLoop({ clock: this.deps.clock, intervalMs, tick: () => this.sweepIdle(), onError: (err) => this.deps.logger.error('idle sweep failed', { err }) });
  }

  /** Local browsers die with the agent; browsers that outlive it (Jobs) are left to the next one. */
  async shutdown(): Promise<void> {
    if (!this.deps.runtime.keepsSessionsOnShutdown) {
      await Promise.all(this.ids().map((id) => this.stop(id, 'shutdown')));
      return;
    }
    for (const m of this.sessions.values()) {
      m.abort.abort(new Error('agent shutting down'));
      if (m.hardTimer !== undefined) this.deps.clock.clearTimeout(m.hardTimer);
      for (const close of m.closeStreams) close(1001, 'agent shutting down');
    }
    this.sessions.clear();
  }

  private crashed(id: string, reason: string): void {
    const m = this.sessions.get(id);
    if (!m || isTerminal(m.status)) return;
    this.deps.logger.warn('browser died', { session: id, reason });
    this.fail(m, reason);
    for (const close of m.closeStreams) close(1011, 'browser crashed');
    void this.deps.runtime.stop(id).finally(() => this.forget(id));
  }

  private fail(m: Managed, reason: string): void {
    this.setStatus(m, 'failed', reason);
    this.deps.metrics.sessionFailed();
  }

  private setStatus(m: Managed, status: SessionStatus, failureReason?: string): void {
    const from = m.status;
    m.status = status;
    if (failureReason) m.failureReason = failureReason;
    this.deps.metrics.transition(from, status);
    if (isTerminal(status) && m.hardTimer !== undefined) this.deps.clock.clearTimeout(m.hardTimer);
    this.deps.report(this.reportOf(m));
  }

  private reportOf(m: Managed): SessionReport {
    return {
      id: m.session.id,
      status: m.status,
      node: m.node ?? this.deps.nodeName,
      endpoints: m.status === 'running' ? m.endpoints : undefined,
      failureReason: m.failureReason,
      at: this.deps.clock.now(),
    };
  }

  private forget(id: string): void {
    const m = this.sessions.get(id);
    if (m && isTerminal(m.status)) this.sessions.delete(id);
  }
}
