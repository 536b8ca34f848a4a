import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chown, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import { sleep, systemClock, withDeadline, type Clock } from '../../shared/clock.js';
import type { SessionOptions } from '../../shared/session.js';
import { CdpPipe } from './cdp-pipe.js';
import { devtoolsVersion, groupCpuMs, groupMembers } from './devtools.js';

/** How clients reach DevTools: the agent's pipe (no port anyone else could open), or a loopback port
 * (only for measuring the pipe against; nothing in the agent serves browsers that way). */
export type DevtoolsTransport = 'pipe' | 'port';

/** The account `npm run setup` creates for browsers. */
export const DEFAULT_BROWSER_USER = 'bso-chromium';

/** The unprivileged account browsers run as when the agent is root. */
export type BrowserUser = { name: string; uid: number; gid: number };

/** Looks an account up by name (`id`, so NSS sources count); refuses root. */
export async function lookupBrowserUser(name: string): Promise<BrowserUser> {
  const id = async (flag: string) => {
    try {
      return Number((await promisify(execFile)('id', [flag, name], { timeout: 5000 })).stdout.trim());
    } catch {
      throw new Error(`CHROMIUM_USER ${name} does not exist: \`npm run setup\` creates it (or set CHROMIUM_USER to another unprivileged account)`);
    }
  };
  const [uid, gid] = [await id('-u'), await id('-g')];
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error(`CHROMIUM_USER ${name}: could not read its uid and gid`);
  if (uid === 0 || gid === 0) throw new Error(`CHROMIUM_USER ${name} is root: browsers never run as root`);
  return { name, uid, gid };
}

/** The account browsers of this process run as: the default unprivileged one when it is root, else
 * none (a non-root process runs them as itself). */
export async function browserUserOfThisProcess(): Promise<BrowserUser | undefined> {
  return process.getuid?.() === 0 ? lookupBrowserUser(DEFAULT_BROWSER_USER) : undefined;
}

/** Flags that keep a headless Chromium from reaching the network or any shared state on its own. */
export function chromiumArgs(opts: { userDataDir: string; noSandbox: boolean; devtools: DevtoolsTransport; options?: SessionOptions }): string[] {
  const args = [
    '--headless',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-breakpad',
    '--disable-dev-shm-usage',
    '--disable-features=Translate,MediaRouter,OptimizationHints',
    '--password-store=basic',
    '--mute-audio',
    ...(opts.devtools === 'pipe' ? ['--remote-debugging-pipe'] : ['--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0']),
    `--user-data-dir=${opts.userDataDir}`,
  ];
  if (opts.noSandbox) args.push('--no-sandbox');
  const o = opts.options;
  if (o?.userAgent) args.push(`--user-agent=${o.userAgent}`);
  if (o?.viewport) args.push(`--window-size=${o.viewport.width},${o.viewport.height}`);
  // Headless Chromium takes navigator.language (and Accept-Language) from --accept-lang; --lang alone leaves en-US.
  if (o?.locale) args.push(`--lang=${o.locale}`, `--accept-lang=${o.locale}`);
  args.push('about:blank');
  return args;
}

const PROFILE_PREFIX = 'bso-chromium-';

/**
 * Removes profiles whose browser is gone without its agent having removed them (an agent that was
 * killed: its browsers exit when their DevTools pipe closes, their profiles stay). A profile is in use
 * while a process has it as its working directory (the browser is started there); younger ones are
 * left alone, since another agent on this machine may be about to start a browser in one.
 */
export async function sweepStaleProfiles(olderThanMs = 60_000): Promise<string[]> {
  const base = tmpdir();
  const candidates = (await readdir(base)).filter((n) => n.startsWith(PROFILE_PREFIX)).map((n) => join(base, n));
  if (candidates.length === 0) return [];
  const cwds: string[] = [];
  for (const pid of await readdir('/proc').catch(() => [])) if (/^\d+$/.test(pid)) cwds.push(await readlink(`/proc/${pid}/cwd`).catch(() => ''));
  const inUse = (dir: string) => cwds.some((cwd) => cwd === dir || cwd.startsWith(`${dir}/`));
  const removed: string[] = [];
  for (const dir of candidates) {
    const info = await stat(dir).catch(() => null);
    if (!info?.isDirectory() || inUse(dir) || Date.now() - info.mtimeMs < olderThanMs) continue;
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    removed.push(dir);
  }
  return removed;
}

/** A settled browser's processes use at most this much CPU per window. */
const SETTLED_CPU_MS = 10;
const SETTLE_WINDOW_MS = 300;

/**
 * Resolves once a launched browser has finished starting (its processes used at most SETTLED_CPU_MS of
 * CPU in the last window), or after `timeoutMs`. A browser answers CDP ~0.3 s after its launch but then
 * spends about a second of CPU more on its first page and helper processes: a warm browser is ready only
 * after that, or the session that claims it (and every other one on the node) shares that burst.
 */
export async function waitUntilSettled(pid: number, opts: { timeoutMs: number; signal?: AbortSignal; clock?: Clock }): Promise<void> {
  const clock = opts.clock ?? systemClock;
  const deadline = clock.now() + opts.timeoutMs;
  let used = await groupCpuMs(pid);
  while (clock.now() < deadline) {
    await sleep(clock, SETTLE_WINDOW_MS, opts.signal);
    const now = await groupCpuMs(pid);
    if (now - used <= SETTLED_CPU_MS) return;
    used = now;
  }
}

/** SIGKILLed processes are gone within milliseconds; this bounds the wait if the kernel is slow. */
const GROUP_EXIT_WAIT_MS = 5000;

export type LaunchedChromium = {
  proc: ChildProcess;
  pid: number;
  /** The profile, also the browser's HOME; private to the browser's user, removed when it ends. */
  userDataDir: string;
  downloadDir: string;
  /** `pipe` transport: the DevTools pipe. */
  pipe?: CdpPipe;
  /** `port` transport: where DevTools listens. */
  port?: number;
  browserWsPath?: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderrTail: string }>;
};

export type LaunchOptions = {
  executablePath: string;
  noSandbox: boolean;
  devtools: DevtoolsTransport;
  /** Run as this account (the agent is root); else as the agent's own user. */
  user?: BrowserUser;
  options?: SessionOptions;
  signal?: AbortSignal;
  timeoutMs: number;
  clock?: Clock;
};

/**
 * Starts Chromium in its own process group, as `user` when given, with nothing of the agent's
 * environment (its secrets stay out of the browser's /proc), and resolves when CDP answers (over the
 * pipe, or on the port it chose itself, read back from DevToolsActivePort). On failure or abort the
 * group is killed and the profile removed.
 */
export async function launchChromium(opts: LaunchOptions): Promise<LaunchedChromium> {
  const clock = opts.clock ?? systemClock;
  const userDataDir = await mkdtemp(join(tmpdir(), PROFILE_PREFIX));
  const downloadDir = join(userDataDir, 'Downloads');
  const tmp = join(userDataDir, 'tmp');
  await mkdir(downloadDir);
  await mkdir(tmp);
  if (opts.user) {
    // mkdtemp made it 0700: private to the browser's user once it owns it.
    for (const dir of [userDataDir, downloadDir, tmp]) await chown(dir, opts.user.uid, opts.user.gid);
  }
  const pipe = opts.devtools === 'pipe';
  const proc = spawn(opts.executablePath, chromiumArgs({ userDataDir, noSandbox: opts.noSandbox, devtools: opts.devtools, options: opts.options }), {
    detached: true,
    stdio: pipe ? ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] : ['ignore', 'ignore', 'pipe'],
    env: browserEnv(userDataDir, opts.options?.timezone),
    cwd: userDataDir,
    ...(opts.user ? { uid: opts.user.uid, gid: opts.user.gid } : {}),
  });
  let stderrTail = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderrTail = (stderrTail + d.toString()).slice(-2000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderrTail: string }>((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal, stderrTail }));
    proc.once('error', (err) => resolve({ code: null, signal: null, stderrTail: `${stderrTail}\n${err.message}` }));
  });
  const launched = { proc, pid: proc.pid ?? -1, userDataDir, downloadDir, exited };
  try {
    if (proc.pid === undefined) throw new Error(`could not start ${opts.executablePath}`);
    const deadline = Date.now() + opts.timeoutMs;
    let dead = false;
    void exited.then(() => (dead = true));
    const diedEarly = async () => {
      const { code, signal, stderrTail } = await exited;
      // The reason stays short; what Chromium printed goes along as the cause, for the agent's log.
      return new Error(`chromium exited before it was ready (${signal ? `signal ${signal}` : `code ${code}`})`, { cause: stderrTail.trim().split('\n').slice(-5).join('\n') });
    };
    if (pipe) {
      const cdp = new CdpPipe(proc.stdio[3] as Writable, proc.stdio[4] as Readable, clock);
      let onAbort = () => {};
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(opts.signal?.reason ?? new Error('aborted'));
        if (opts.signal?.aborted) onAbort();
        opts.signal?.addEventListener('abort', onAbort, { once: true });
      });
      try {
        await Promise.race([cdp.call('Browser.getVersion', {}, opts.timeoutMs), aborted]);
      } catch (err) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? err;
        await withDeadline(clock, exited, 200, { error: () => err as Error }).catch(() => {});
        if (dead) throw await diedEarly();
        throw new Error(`chromium was not ready within ${opts.timeoutMs} ms`, { cause: err });
      } finally {
        opts.signal?.removeEventListener('abort', onAbort);
        aborted.catch(() => {});
      }
      return { ...launched, pipe: cdp };
    }
    let active: { port: number; path: string } | null = null;
    while (!active) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
      if (dead) throw await diedEarly();
      if (Date.now() > deadline) throw new Error(`chromium was not ready within ${opts.timeoutMs} ms`);
      active = await readDevToolsActivePort(userDataDir);
      if (!active) await new Promise((r) => setTimeout(r, 5));
    }
    while (!(await devtoolsVersion('127.0.0.1', active.port, 1000))) {
      if (dead || opts.signal?.aborted || Date.now() > deadline) throw new Error('chromium opened its port but CDP does not answer');
      await new Promise((r) => setTimeout(r, 10));
    }
    return { ...launched, port: active.port, browserWsPath: active.path };
  } catch (err) {
    await killChromium(launched);
    throw err;
  }
}

/**
 * All a browser gets of an environment: a HOME (its profile), a PATH, its time zone, and a TMPDIR inside the
 * profile: Chromium's singleton socket directory (`org.chromium.Chromium.*`) goes there, so a browser
 * that is killed leaves nothing in /tmp once its profile is removed.
 */
function browserEnv(home: string, timezone: string | undefined): NodeJS.ProcessEnv {
  return {
    // The session's time zone (validated as an IANA name): Chromium takes it from TZ.
    ...(timezone ? { TZ: timezone } : {}),
    HOME: home,
    PATH: '/usr/local/bin:/usr/bin:/bin',
    TMPDIR: join(home, 'tmp'),
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_CACHE_HOME: join(home, '.cache'),
    LANG: 'C.UTF-8',
  };
}

async function readDevToolsActivePort(dir: string): Promise<{ port: number; path: string } | null> {
  try {
    const [port, path] = (await readFile(join(dir, 'DevToolsActivePort'), 'utf8')).split('\n');
    const n = Number(port);
    return Number.isInteger(n) && n > 0 && path?.startsWith('/devtools/browser/') ? { port: n, path: path.trim() } : null;
  } catch {
    return null;
  }
}

/**
 * SIGTERM the whole group, SIGKILL what is left after a grace period, wait until no process of the
 * group is alive (renderers and helpers outlive the main process by a moment), then drop the profile.
 */
export async function killChromium(c: { pid: number; userDataDir: string; exited: Promise<unknown> }, graceMs = 2000): Promise<void> {
  const signalGroup = (sig: NodeJS.Signals) => {
    if (c.pid <= 0) return;
    try {
      process.kill(-c.pid, sig);
    } catch {
      // group already gone
    }
  };
  signalGroup('SIGTERM');
  await withDeadline(systemClock, c.exited, graceMs, { error: () => new Error('grace period over') }).catch(() => {});
  signalGroup('SIGKILL');
  await c.exited;
  for (let waited = 0; c.pid > 0 && (await groupMembers(c.pid)).length > 0 && waited < GROUP_EXIT_WAIT_MS; waited += 10) {
    signalGroup('SIGKILL');
    await new Promise((r) => setTimeout(r, 10));
  }
  await rm(c.userDataDir, { recursive: true, force: true, maxRetries: 3 });
}
