import type { Logger } from '../../shared/logger.js';
import type { Session } from '../../shared/session.js';
import { killChromium, launchChromium, type BrowserUser, type LaunchedChromium } from './chromium.js';
import { DevtoolsMux } from './devtools-mux.js';
import { loadProtocol } from './devtools.js';
import type { BrowserExit, BrowserHandle, BrowserRuntime } from './types.js';

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
};

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

  constructor(private readonly deps: LocalRuntimeDeps) {}

  async start(session: Session, signal: AbortSignal): Promise<BrowserHandle> {
    if (this.browsers.size >= this.deps.maxBrowsers) throw new Error(`this agent already runs ${this.deps.maxBrowsers} browsers`);
    const started = performance.now();
    const c = await launchChromium({
      executablePath: this.deps.executablePath,
      noSandbox: this.deps.noSandbox,
      devtools: 'pipe',
      user: this.deps.user,
      options: session.options,
      signal,
      timeoutMs: this.deps.startTimeoutMs,
    });
    if (signal.aborted) {
      await killChromium(c);
      throw signal.reason ?? new Error('aborted');
    }
    this.browsers.set(session.id, c);
    this.deps.logger.info('runtime: chromium ready', { session: session.id, pid: c.pid, user: this.deps.user?.name, ms: Math.round(performance.now() - started) });
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
    await Promise.all([...this.browsers.keys()].map((id) => this.stop(id)));
  }

  pidOf(id: string): number | undefined {
    return this.browsers.get(id)?.pid;
  }

  profileOf(id: string): string | undefined {
    return this.browsers.get(id)?.userDataDir;
  }
}
