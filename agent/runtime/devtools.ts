import { readdir, readFile } from 'node:fs/promises';
import { request } from 'node:http';

export type DevtoolsVersion = { Browser?: string; webSocketDebuggerUrl?: string };

/**
 * The one DevTools probe: `GET /json/version` of the browser at host:port. Null when it does not
 * answer 200 with JSON within `timeoutMs` (or `signal` aborts); never throws.
 */
export function devtoolsVersion(host: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<DevtoolsVersion | null> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: '/json/version', timeout: timeoutMs, signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', () => resolve(null));
      res.on('end', () => {
        if (res.statusCode !== 200) return resolve(null);
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString()) as DevtoolsVersion);
        } catch {
          resolve(null);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
    req.end();
  });
}

/** Live (not zombie) processes of a process group, read from /proc: a browser's helpers share its group. */
export async function groupMembers(pgid: number): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command (which may hold spaces and parentheses): state ppid pgrp ...
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') out.push(Number(entry));
    } catch {
      // exited while we looked
    }
  }
  return out;
}
