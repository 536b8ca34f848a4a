import { startLoop, withDeadline, type Clock, type TimerHandle } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import { isTerminal, type Session, type SessionEndpoints, type SessionReport, type SessionStatus } from '../shared/session.js';
import type { AgentMetrics } from './metrics.js';
import type { DevtoolsMux } from './runtime/devtools-mux.js';
import type { BrowserExit, BrowserHandle, BrowserRuntime, StartContext } from './runtime/types.js';
import { traceIdOf } from '../shared/trace.js';

export type RunningBrowser = { id: string; endpoints?: SessionEndpoints; devtools?: DevtoolsMux };

export type StopReason = 'deleted' | 'timed_out' | 'orphaned' | 'idle' | 'shutdown' | 'released';

type Managed = {
  session: Session;
  status: SessionStatus;
  abort: AbortController;
  endpoints?: SessionEndpoints;
  devtools?: DevtoolsMux;
  lastActivity: number;
  hardTimer?: TimerHandle;
  /** Settles with the outcome of the start (or adoption), whatever it was; never rejects. */
  started: Promise<SessionReport>;
  /** The closers of the session's open streams, each marked whether it is a WebSocket. */
  closeStreams: Map<(code: number, reason: string) => void, boolean>;
  failureReason?: string;
  node?: string;
  startedAt?: number;
  /** End the session once no client WebSocket is open: asked for (`release`), or a `keepAlive: false`
   * session whose first client connected. */
  endWhenUnused: boolean;
};

export type SessionManagerDeps = {
  runtime: BrowserRuntime;
  clock: Clock;
  logger: Logger;
  metrics: AgentMetrics;
  nodeName: string;
  /** Delivers a status change to the router (queued and retried by the caller). */
  report: (r: SessionReport) => void;
  /** The number of sessions held changed (a start taken, a session forgotten): the agent's load. */
  onLoadChanged?: (active: number) => void;
};

const CLOSE_REASON: Record<StopReason, [SessionStatus, string]> = {
  deleted: ['terminated', 'session deleted'],
  orphaned: ['terminated', 'session no longer exists'],
  shutdown: ['terminated', 'agent shutting down'],
  timed_out: ['timed_out', 'session timeout reached'],
  idle: ['timed_out', 'session idle timeout reached'],
  released: ['terminated', 'session released'],
};

/** How long shutdown waits for starts in flight to settle after aborting them. */
const SHUTDOWN_SETTLE_MS = 20_000;

/**
 * The agent's sessions: start, adoption after a restart, deadlines (hard and idle), the browser's own
 * end, stop. Status reaches the router on one channel per change: the outcome of a `start` is the
 * answer to the router's `session.start` call; everything after it (and an adoption's outcome) is a
 * report.
 */
export class SessionManager {
  private readonly sessions = new Map<string, Managed>();

  constructor(private readonly deps: SessionManagerDeps) {}

  /** The router's `session.start`: resolves with the outcome, running or failed. */
  start(session: Session, context: StartContext = {}): Promise<SessionReport> {
    const existing = this.sessions.get(session.id);
    if (existing) return existing.started; // a retried start is answered by the first one
    const m = this.track(session, false);
    const logger = context.traceparent ? this.deps.logger.child({ traceId: traceIdOf(context.traceparent) }) : this.deps.logger;
    logger.info('starting session', { session: session.id, runtime: this.deps.runtime.name });
    m.started = this.launch(m, (signal) => this.deps.runtime.start(session, signal, context), false, logger);
    return m.started;
  }

  /** A browser that outlived the previous agent (a Job): take it back. Nobody asked for this, so the
   * outcome goes to the router as a report. */
  adopt(session: Session): Promise<SessionReport> {
    const existing = this.sessions.get(session.id);
    if (existing) return existing.started;
    const { adopt } = this.deps.runtime;
    if (!adopt) throw new Error(`the ${this.deps.runtime.name} runtime cannot adopt browsers`);
    const m = this.track(session, true);
    this.deps.logger.info('adopting session', { session: session.id });
    m.started = this.launch(m, (signal) => adopt.call(this.deps.runtime, session, signal), true);
    return m.started;
  }

  async stop(id: string, why: StopReason): Promise<boolean> {
    const m = this.sessions.get(id);
    if (!m) {
      // Not ours, but the runtime may still hold it (a Job no agent knew about): the router said stop.
      if (!this.deps.runtime.present?.().includes(id)) return false;
      this.deps.logger.info('stopping a browser no session of this agent owns', { session: id, why });
      await this.deps.runtime.stop(id);
      return true;
    }
    if (!isTerminal(m.status)) {
      const [status, reason] = CLOSE_REASON[why];
      this.deps.logger.info('stopping session', { session: id, why });
      m.abort.abort(new Error(reason));
      this.setStatus(m, status, { reason: why === 'idle' ? 'idle timeout' : undefined, report: true });
      for (const close of m.closeStreams.keys()) close(1001, reason);
    }
    // A start still in flight sees the abort and cleans up what it launched; wait for that too.
    await m.started;
    await this.deps.runtime.stop(id);
    this.forget(id);
    return true;
  }

  /** How the proxy reaches a session's running browser; null when it is not running here. */
  browser(id: string): RunningBrowser | null {
    const m = this.sessions.get(id);
    return m && m.status === 'running' ? { id, endpoints: m.endpoints, devtools: m.devtools } : null;
  }

  touch(id: string): void {
    const m = this.sessions.get(id);
    if (m) m.lastActivity = this.deps.clock.now();
  }

  /**
   * Lets the proxy close a session's streams with a reason when the session ends. An open stream keeps
   * the session from idling however quiet it is; the idle timeout counts from the last one's end.
   */
  trackStream(id: string, close: (code: number, reason: string) => void, webSocket: boolean): () => void {
    const m = this.sessions.get(id);
    if (!m) return () => {};
    m.closeStreams.set(close, webSocket);
    if (webSocket && m.session.keepAlive === false) m.endWhenUnused = true;
    return () => {
      if (!m.closeStreams.delete(close)) return;
      m.lastActivity = this.deps.clock.now();
      if (webSocket) this.endIfUnused(m);
    };
  }

  /**
   * The client is done with the session: it ends now if no client WebSocket is open, else when the last
   * one closes. False when the session does not run (or start) here.
   */
  async release(id: string): Promise<{ found: boolean; ended: boolean }> {
    const m = this.sessions.get(id);
    if (!m || isTerminal(m.status)) return { found: false, ended: false };
    m.endWhenUnused = true;
    if (!this.unused(m)) return { found: true, ended: false };
    await this.stop(id, 'released');
    return { found: true, ended: true };
  }

  private unused(m: Managed): boolean {
    return m.endWhenUnused && m.status === 'running' && this.openWebSockets(m.session.id) === 0;
  }

  private endIfUnused(m: Managed): void {
    if (this.unused(m)) void this.stop(m.session.id, 'released');
  }

  /** The session's open WebSockets through this agent. */
  openWebSockets(id: string): number {
    let n = 0;
    for (const webSocket of this.sessions.get(id)?.closeStreams.values() ?? []) if (webSocket) n++;
    return n;
  }

  /** Every session this agent runs or holds a browser for (the runtime may know some it does not). */
  ids(): string[] {
    return [...new Set([...this.sessions.keys(), ...(this.deps.runtime.present?.() ?? [])])];
  }

  /** Running sessions as the agent knows them, for a router that has to rebuild its records. */
  snapshots(): Session[] {
    return [...this.sessions.values()]
      .filter((m) => m.status === 'running')
      .map((m) => ({ ...m.session, status: 'running' as const, node: m.node ?? this.deps.nodeName, endpoints: m.endpoints, startedAt: m.startedAt }));
  }

  /** Sessions this agent holds, starting or running: its load as the router places sessions. */
  get active(): number {
    return this.sessions.size;
  }

  running(): RunningBrowser[] {
    return [...this.sessions.values()].filter((m) => m.status === 'running').map((m) => ({ id: m.session.id, endpoints: m.endpoints, devtools: m.devtools }));
  }

  /** Ends sessions idle longer than their idle timeout; run it on a loop. */
  sweepIdle(): void {
    const now = this.deps.clock.now();
    for (const m of this.sessions.values()) {
      if (m.status !== 'running') continue;
      // A connected client keeps the session, however quiet.
      if (m.closeStreams.size > 0) m.lastActivity = now;
      else if (now - m.lastActivity > m.session.idleTimeout * 1000) void this.stop(m.session.id, 'idle');
    }
  }

  startIdleLoop(intervalMs = 1000) {
    return startLoop({ clock: this.deps.clock, intervalMs, tick: () => this.sweepIdle(), onError: (err) => this.deps.logger.error('idle sweep failed', { err }) });
  }

  /**
   * Local browsers die with the agent. Browsers that outlive it (Jobs) are left to the next agent,
   * except those still starting: their starts are aborted and awaited, so no Job is created after
   * this returns, where the next agent would not find it.
   */
  async shutdown(): Promise<void> {
    if (!this.deps.runtime.keepsSessionsOnShutdown) {
      await Promise.all([...this.sessions.keys()].map((id) => this.stop(id, 'shutdown')));
      return;
    }
    const starting: Array<Promise<unknown>> = [];
    for (const m of this.sessions.values()) {
      if (m.status === 'pending') {
        m.abort.abort(new Error('agent shutting down'));
        starting.push(m.started);
      }
      if (m.hardTimer !== undefined) this.deps.clock.clearTimeout(m.hardTimer);
      for (const close of m.closeStreams.keys()) close(1001, 'agent shutting down');
    }
    await withDeadline(this.deps.clock, Promise.all(starting), SHUTDOWN_SETTLE_MS, { error: () => new Error('starts did not settle') }).catch((err) =>
      this.deps.logger.warn('shutdown: leaving starts behind', { err }),
    );
    this.sessions.clear();
  }

  private track(session: Session, adopted: boolean): Managed {
    const { clock } = this.deps;
    this.deps.metrics.sessionTracked(adopted);
    const m: Managed = {
      session,
      status: 'pending',
      abort: new AbortController(),
      lastActivity: clock.now(),
      closeStreams: new Map(),
      started: Promise.resolve(null as never),
      endWhenUnused: false,
    };
    this.sessions.set(session.id, m);
    this.deps.onLoadChanged?.(this.active);
    m.hardTimer = clock.setTimeout(() => void this.stop(session.id, 'timed_out'), Math.max(0, session.expiresAt - clock.now()));
    return m;
  }

  /** Brings a tracked session to running (or failed) through `open`; `report`: tell the router by report. */
  private launch(m: Managed, open: (signal: AbortSignal) => Promise<BrowserHandle>, report: boolean, logger = this.deps.logger): Promise<SessionReport> {
    const { clock, metrics } = this.deps;
    const id = m.session.id;
    const begun = clock.now();
    return open(m.abort.signal).then(
      (handle) => {
        if (m.status !== 'pending') {
          void this.deps.runtime.stop(id);
          return this.reportOf(m);
        }
        m.endpoints = handle.endpoints;
        m.devtools = handle.devtools;
        m.node = handle.node;
        m.lastActivity = clock.now();
        m.startedAt = clock.now();
        this.setStatus(m, 'running', { report });
        metrics.observeReady((clock.now() - begun) / 1000);
        logger.info('session running', { session: id, ms: clock.now() - begun });
        void handle.exited.then((exit) => this.ended(id, exit));
        // Released while it started, with no client: nobody will use it.
        this.endIfUnused(m);
        return this.reportOf(m);
      },
      (err: unknown) => {
        if (m.status === 'pending') {
          logger.warn('browser did not start', { session: id, err });
          this.setStatus(m, 'failed', { reason: `browser failed to start: ${(err as Error).message}`, report });
          // Nothing runs: the record goes once the router heard the outcome (with this answer).
          this.forget(id);
        }
        return this.reportOf(m);
      },
    );
  }

  /** The browser ended by itself: closed by its client (terminated), or crashed (failed). */
  private ended(id: string, exit: BrowserExit): void {
    const m = this.sessions.get(id);
    if (!m || isTerminal(m.status)) return;
    this.deps.logger.info(exit.clean ? 'browser closed by its client' : 'browser died', { session: id, reason: exit.reason });
    this.setStatus(m, exit.clean ? 'terminated' : 'failed', { reason: exit.reason, report: true });
    const [code, why] = exit.clean ? [1000, ''] : [1011, 'browser crashed'];
    for (const close of m.closeStreams.keys()) close(code, why);
    void this.deps.runtime.stop(id).finally(() => this.forget(id));
  }

  private setStatus(m: Managed, status: SessionStatus, opts: { reason?: string; report: boolean }): void {
    const from = m.status;
    m.status = status;
    if (opts.reason) m.failureReason = opts.reason;
    this.deps.metrics.transition(from, status);
    if (status === 'failed') this.deps.metrics.sessionFailed();
    if (isTerminal(status) && m.hardTimer !== undefined) this.deps.clock.clearTimeout(m.hardTimer);
    if (opts.report) this.deps.report(this.reportOf(m));
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
    if (m && isTerminal(m.status) && this.sessions.delete(id)) this.deps.onLoadChanged?.(this.active);
  }
}
