import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, makeServerCertificate } from '../infra/test-cluster/control-plane.js';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Tests that need a component fail loudly when it is missing; they never skip. */
export function requireBinary(path: string, hint: string): void {
  if (!existsSync(path)) throw new Error(`${path} is missing: ${hint}`);
}

export { freePort };

export type RedisServer = {
  host: string;
  port: number;
  /** With the ACL user's name and password, `rediss://` when TLS. */
  url: string;
  /** TLS: the PEM file of the CA that signed the server's certificate. */
  caFile?: string;
  pid: number;
  stop(): Promise<void>;
};

export type RedisServerOptions = {
  /** Serve TLS only (`--tls-port`, no plain port), with a certificate from a CA made for this server. */
  tls?: boolean;
  /** An ACL user with exactly these rules; the `default` user is switched off. */
  aclUser?: { name: string; password: string; rules: string };
  /** The address to listen on (and name in the URL and the certificate): loopback unless a test's own namespace has another. */
  host?: string;
};

/** A real redis-server on a free loopback port, with a throwaway data dir and no persistence. */
export async function startRedis(opts: RedisServerOptions = {}): Promise<RedisServer> {
  const bin = process.env.REDIS_SERVER_PATH ?? '/usr/bin/redis-server';
  requireBinary(bin, 'install the Debian package redis-server (.ci/run does)');
  const dir = await mkdtemp(join(tmpdir(), 'bso-redis-'));
  const host = opts.host ?? '127.0.0.1';
  if (opts.tls) makeServerCertificate(dir, 'redis', host, host === '127.0.0.1' ? [] : [host]);
  const user = opts.aclUser;
  const auth = user ? `${encodeURIComponent(user.name)}:${encodeURIComponent(user.password)}@` : '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const listen = opts.tls
      ? [
          '--port',
          '0',
          '--tls-port',
          String(port),
          '--tls-cert-file',
          join(dir, 'redis.crt'),
          '--tls-key-file',
          join(dir, 'redis.key'),
          '--tls-ca-cert-file',
          join(dir, 'ca.crt'),
          '--tls-auth-clients',
          'no',
        ]
      : ['--port', String(port)];
    // redis-server takes each argument as one token of the directive.
    const acl = user ? ['--user', 'default', 'off', '--user', user.name, 'on', `>${user.password}`, ...user.rules.split(' ')] : [];
    const proc = spawn(bin, [...listen, ...acl, '--bind', host, '--save', '', '--appendonly', 'no', '--dir', dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const ready = await new Promise<boolean>((resolve) => {
      let out = '';
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('Ready to accept connections')) resolve(true);
      });
      proc.once('exit', () => resolve(false));
    });
    if (ready) {
      return {
        host,
        port,
        url: `${opts.tls ? 'rediss' : 'redis'}://${auth}${host}:${port}`,
        caFile: opts.tls ? join(dir, 'ca.crt') : undefined,
        pid: proc.pid!,
        stop: async () => {
          await killGroup(proc);
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
  }
  throw new Error('redis-server did not start');
}

export async function killGroup(proc: ChildProcess, graceMs = 3000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null || proc.pid === undefined) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const sig = (s: NodeJS.Signals) => {
    try {
      process.kill(-proc.pid!, s);
    } catch {
      // gone
    }
  };
  sig('SIGTERM');
  const t = setTimeout(() => sig('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** Pids of live processes whose command line mentions `needle` and not `unless` (for leak checks). */
export async function pidsMatching(needle: string, unless?: string): Promise<number[]> {
  const { readdir, readFile } = await import('node:fs/promises');
  const out: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replace(/\0/g, ' ');
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (/\) Z /.test(stat)) continue; // zombies are already dead
      if (cmd.includes(needle) && !(unless && cmd.includes(unless))) out.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
