/**
 * The chromium profile's browser container (this project's browser image, and the test cluster's
 * process kubelet): Debian Chromium with DevTools on the pod's port. Chromium serves DevTools on
 * loopback only, so the container forwards its pod port there; `/json/version` then names the
 * browser's WebSocket path, which is all the agent reads.
 */
import { spawnSync } from 'node:child_process';
import { createServer, connect, type Server } from 'node:net';
import type { SessionOptions } from '../../shared/session.js';
import { killChromium, launchChromium, type BrowserUser, type LaunchedChromium } from '../runtime/chromium.js';

export type BrowserContainer = {
  chromium: LaunchedChromium;
  forwarder: Server;
  /** Ends the browser (its whole process group) and the forwarder. */
  stop(graceMs?: number): Promise<void>;
};

export type BrowserContainerOptions = {
  host: string;
  port: number;
  chromiumPath: string;
  noSandbox: boolean;
  user?: BrowserUser;
  options?: SessionOptions;
  timeoutMs: number;
  signal?: AbortSignal;
};

export async function startBrowserContainer(opts: BrowserContainerOptions): Promise<BrowserContainer> {
  const chromium = await launchChromium({
    executablePath: opts.chromiumPath,
    noSandbox: opts.noSandbox,
    devtools: 'port',
    user: opts.user,
    options: opts.options,
    timeoutMs: opts.timeoutMs,
    signal: opts.signal,
  });
  const target = chromium.port!;
  const forwarder = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  try {
    await new Promise<void>((resolve, reject) => forwarder.once('error', reject).listen(opts.port, opts.host, resolve));
  } catch (err) {
    await killChromium(chromium, 0);
    throw err;
  }
  void chromium.exited.then(() => forwarder.close());
  return {
    chromium,
    forwarder,
    async stop(graceMs = 2000) {
      forwarder.close();
      await killChromium(chromium, graceMs);
    },
  };
}

/**
 * Whether Chromium's namespace sandbox can be made here: a pod under the runtime's default seccomp
 * profile may not create user namespaces (and `allowPrivilegeEscalation: false` rules out the setuid
 * sandbox), and there Chromium refuses to start without `--no-sandbox`. Asked of `unshare` the way
 * Chromium asks the kernel: a new user, PID and network namespace.
 */
export function namespaceSandboxAvailable(): boolean {
  const res = spawnSync('unshare', ['--user', '--pid', '--net', '--fork', 'true'], { stdio: 'ignore', timeout: 5000 });
  return res.status === 0;
}
