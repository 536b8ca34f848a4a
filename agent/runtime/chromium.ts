import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock, withDeadline } from '../../shared/clock.js';
import type { SessionOptions } from '../../shared/session.js';
import { devtoolsVersion, groupMembers } from './devtools.js';

/** Flags that keep a headless Chromium from reaching the network or any shared state on its own. */
export function chromiumArgs(opts: { userDataDir: string; noSandbox: boolean; options?: SessionOptions }): string[] {
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
    '--remote-debugging-address=127.0.0.1',
    '--remote-debugging-port=0',
    `--user-data-dir=${opts.userDataDir}`,
  ];
  if (opts.noSandbox) args.push('--no-sandbox');
  const o = opts.options;
  if (o?.userAgent) args.push(`--user-agent=${o.userAgent}`);
  if (o?.viewport) args.push(`--window-size=${o.viewport.width},${o.viewport.height}`);
  if (o?.locale) args.push(`--lang=${o.locale}`);
  args.push('about:blank');
  return args;
}

/** SIGKILLed processes are gone within milliseconds; this bounds the wait if the kernel is slow. */
const GROUP_EXIT_WAIT_MS = 5000;

export type LaunchedChromium = {
  proc: ChildProcess;
  pid: number;
  userDataDir: string;
  port: number;
  browserWsPath: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderrTail: string }>;
};

/**
 * Starts Chromium in its own process group and resolves when CDP answers on the port it chose itself
 * (read back from DevToolsActivePort). On failure or abort the group is killed and the profile removed.
 */
export async function launchChromium(opts: {
  executablePath: string;
  noSandbox: boolean;
  options?: SessionOptions;
  signal?: AbortSignal;
  timeoutMs: number;
}): Promise<LaunchedChromium> {
  const userDataDir = await mkdtemp(join(tmpdir(), 'bso-chromium-'));
  const proc = spawn(opts.executablePath, chromiumArgs({ userDataDir, noSandbox: opts.noSandbox, options: opts.options }), {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderrTail = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderrTail = (stderrTail + d.toString()).slice(-2000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderrTail: string }>((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal, stderrTail }));
    proc.once('error', (err) => resolve({ code: null, signal: null, stderrTail: `${stderrTail}\n${err.message}` }));
  });
  const launched = { proc, pid: proc.pid ?? -1, userDataDir, exited };
  try {
    if (proc.pid === undefined) throw new Error(`could not start ${opts.executablePath}`);
    const deadline = Date.now() + opts.timeoutMs;
    let dead = false;
    void exited.then(() => (dead = true));
    let active: { port: number; path: string } | null = null;
    while (!active) {
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
      if (dead) {
        const { code, signal, stderrTail } = await exited;
        // The reason stays short; what Chromium printed goes along as the cause, for the agent's log.
        throw new Error(`chromium exited before it was ready (${signal ? `signal ${signal}` : `code ${code}`})`, { cause: stderrTail.trim().split('\n').slice(-5).join('\n') });
      }
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
