import { systemClock, type Clock } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';
import type { Session, SessionOptions } from '../../shared/session.js';
import { killChromium, launchChromium, waitUntilSettled, type BrowserUser, type LaunchedChromium } from './chromium.js';
import { applyOptionsOverCdp } from './claim-options.js';
import { DevtoolsMux } from './devtools-mux.js';
import { loadProtocol } from './devtools.js';
import type { BrowserExit, BrowserHandle, BrowserRuntime } from './types.js';
import { createWarmPool, type WarmPool, type WarmPoolMetrics, type WarmPoolSettings } from './warm-pool.js';

export type LocalRuntimeDeps = {
  executablePath: string;
  /** Only when configured so (CHROMIUM_NO_SANDBOX=true): Chromium's sandbox is on by default. */
  noSandbox: boolean;
  /** The unprivileged account browsers run as (the agent is root); absent: the agent's own user. */
  user?: BrowserUser;
  maxBrowsers: number;
  /** Open DevTools WebSockets per browser. */
  maxConnections?: number;
  startTimeoutMs: number;
  logger: Logger;
  clock?: Clock;
  /** Browsers launched ahead of their sessions; absent or size 0: every session launches its own. */
  warmPool?: { settings: WarmPoolSettings; metrics: WarmPoolMetrics };
};

/** How long applying a session's options to a warm browser may take before a cold one is launched instead. */
const CLAIM_TIMEOUT_MS = 5000;
/** The longest a warm browser is waited for to finish starting (on a busy node it may never look idle). */
const SETTLE_TIMEOUT_MS = 5000;

/**
 * One Debian Chromium process (group) per session on this machine: for development and `npm start`.
 * Each browser runs as an unprivileged user with its sandbox on, in a private profile, and speaks
 * DevTools only over its pipe to this agent: no port another session or local user could open.
 */
export class LocalChromiumRuntime implements BrowserRuntime {
  readonly name = 'local';
  private readonly browsers = new Map<string, LaunchedChromium>();
  private readonly stopping = new Map<string, Promise<void>>();
  private protocolJson: Promise<unknown> | undefined;
  private readonly pool: WarmPool<LaunchedChromium> | null;
  private readonly clock: Clock;

  constructor(private readonly deps: LocalRuntimeDeps) {
    this.clock = deps.clock ?? systemClock;
    this.pool = createWarmPool(deps.warmPool, {
      room: () => this.room(),
      launch: (signal) => this.launchWarm(signal),
      destroy: (c) => killChromium(c),
      alive: (c) => !c.pipe!.isClosed,
      clock: this.clock,
      logger: deps.logger,
    });
  }

  async init(): Promise<void> {
    this.pool?.start();
  }

  async start(session: Session, signal: AbortSignal): Promise<BrowserHandle> {
    const started = performance.now();
    // This session's browser holds its room from here: the pool, woken by the claim, must not take it.
    this.starting++;
    try {
      const warm = this.pool?.claim() ?? null;
      if (warm) {
        try {
          await applyOptionsOverCdp(warm.pipe!, session.options, { clock: this.clock, logger: this.deps.logger, timeoutMs: CLAIM_TIMEOUT_MS });
          if (signal.aborted) throw signal.reason ?? new Error('aborted');
          this.deps.logger.info('runtime: warm chromium claimed', { session: session.id, pid: warm.pid, ms: Math.round(performance.now() - started) });
          return this.handleOf(session, warm);
        } catch (err) {
          await killChromium(warm);
          if (signal.aborted) throw err;
          this.deps.logger.warn('runtime: a warm browser did not take the options; launching one', { session: session.id, err });
        }
      }
      // Warm browsers give their room to sessions: the router places no more sessions than the node holds.
      while (this.room() < 0) if (!(await this.pool?.evict())) throw new Error(`this agent already runs ${this.deps.maxBrowsers} browsers`);
      const c = await this.launch(signal, session.options);
      this.deps.logger.info('runtime: chromium ready', { session: session.id, pid: c.pid, user: this.deps.user?.name, ms: Math.round(performance.now() - started) });
      return this.handleOf(session, c);
    } finally {
      this.starting--;
    }
  }

  /** Browsers the node can still take: sessions (running and starting) and warm ones count. */
  private room(): number {
    return this.deps.maxBrowsers - this.browsers.size - this.starting - (this.pool?.held ?? 0);
  }

  /** Sessions whose browser is being claimed or launched. */
  private starting = 0;

  /** A fresh browser: with a session's options as flags, or none (a warm one: its options come at claim). */
  private async launch(signal: AbortSignal, options?: SessionOptions): Promise<LaunchedChromium> {
    const c = await launchChromium({
      executablePath: this.deps.executablePath,
      noSandbox: this.deps.noSandbox,
      devtools: 'pipe',
      user: this.deps.user,
      options,
      signal,
      timeoutMs: this.deps.startTimeoutMs,
    });
    if (signal.aborted) {
      await killChromium(c);
      throw signal.reason ?? new Error('aborted');
    }
    return c;
  }

  /** A browser for the pool: ready once it has finished starting, not merely once it answers CDP. */
  private async launchWarm(signal: AbortSignal): Promise<LaunchedChromium> {
    const c = await this.launch(signal);
    try {
      await waitUntilSettled(c.pid, { timeoutMs: SETTLE_TIMEOUT_MS, signal, clock: this.clock });
      return c;
    } catch (err) {
      await killChromium(c);
      throw err;
    }
  }

  private handleOf(session: Session, c: LaunchedChromium): BrowserHandle {
    this.browsers.set(session.id, c);
    const exited = c.exited.then(({ code, signal: sig, stderrTail }): BrowserExit => {
      // Chromium exits 0 when a client sends Browser.close (Puppeteer's browser.close()).
      if (code === 0 && !sig) return { clean: true, reason: 'closed by the client' };
      // A browser this runtime is stopping was asked to die; only an unasked end is worth a warning.
      if (!this.stopping.has(session.id))
        this.deps.logger.warn('runtime: chromium died', { session: session.id, pid: c.pid, code, signal: sig, stderr: stderrTail.trim().split('\n').slice(-5) });
      return { clean: false, reason: sig ? `the browser was killed (${sig})` : `the browser crashed (exit code ${code})` };
    });
    const devtools = new DevtoolsMux(
      c.pipe!,
      { profileDir: c.userDataDir, downloadDir: c.downloadDir, maxConnections: this.deps.maxConnections ?? 32 },
      () => (this.protocolJson ??= loadProtocol()),
    );
    return { devtools, exited };
  }

  stop(id: string): Promise<void> {
    const inFlight = this.stopping.get(id);
    if (inFlight) return inFlight;
    const c = this.browsers.get(id);
    if (!c) return Promise.resolve();
    const p = killChromium(c)
      .then(() => this.deps.logger.info('runtime: chromium stopped', { session: id, pid: c.pid }))
      .finally(() => {
        this.browsers.delete(id);
        this.stopping.delete(id);
      });
    this.stopping.set(id, p);
    return p;
  }

  async stopAll(): Promise<void> {
    await this.pool?.stop();
    await Promise.all([...this.browsers.keys()].map((id) => this.stop(id)));
  }

  /** The warm pool's state (null without one), for metrics. */
  warmPool(): { idle: number; held: number; target: number } | null {
    return this.pool?.state() ?? null;
  }

  pidOf(id: string): number | undefined {
    return this.browsers.get(id)?.pid;
  }

  profileOf(id: string): string | undefined {
    return this.browsers.get(id)?.userDataDir;
  }
}
