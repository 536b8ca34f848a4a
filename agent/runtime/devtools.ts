import { readdir, readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import type { SessionEndpoints } from '../../shared/session.js';
import { cdpExchange } from './cdp-socket.js';

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

/** Does the image serve DevTools' HTTP endpoints (`/json/*`) itself? steel serves CDP only on its WebSocket. */
export const servesDevtoolsJson = (endpoints: SessionEndpoints): boolean => endpoints.profile !== 'steel';

/** Does the browser at `endpoints` answer? By its `/json/version`, or (an image that serves CDP only on a WebSocket) a CDP command. Never throws. */
export async function browserAnswers(endpoints: SessionEndpoints, timeoutMs: number): Promise<boolean> {
  if (endpoints.apiPort === undefined) return false;
  if (servesDevtoolsJson(endpoints)) return (await devtoolsVersion(endpoints.host, endpoints.apiPort, timeoutMs)) !== null;
  return cdpExchange(`ws://${endpoints.host}:${endpoints.apiPort}${endpoints.browserWsPath ?? '/'}`, [{ method: 'Browser.getVersion' }], { timeoutMs }).then(
    () => true,
    () => false,
  );
}

/** Live (not zombie) processes of a process group, read from /proc: a browser's helpers share its group. */
/** CPU time (user + system, ms) the live processes of group `pgid` have used. */
export async function groupCpuMs(pgid: number): Promise<number> {
  let ticks = 0;
  for (const pid of await groupMembers(pgid)) {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      // After the command: state(3) … utime(14) stime(15), counted from field 3.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // exited while we looked
    }
  }
  return ticks * MS_PER_TICK;
}

/** Linux reports process times in clock ticks of 1/100 s (USER_HZ) whatever the kernel's HZ. */
const MS_PER_TICK = 10;

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

export type DevtoolsAnswer = { status: number; body: unknown };
export type BrowserVersion = { protocolVersion: string; product: string; revision: string; userAgent: string; jsVersion: string };
export type TargetInfo = { targetId: string; type: string; title: string; url: string };

/** Targets Chromium's own `/json/list` leaves out. */
const HIDDEN_TARGET_TYPES = new Set(['browser', 'browser_ui', 'tab']);
/** The host part of the URLs the agent hands out; the router points them back through itself. */
const DEVTOOLS_SELF = 'localhost';

/** `/json/version` as Chromium answers it, from `Browser.getVersion`. */
export function describeVersion(v: BrowserVersion, browserPath: string): Record<string, string> {
  return {
    Browser: v.product,
    'Protocol-Version': v.protocolVersion,
    'User-Agent': v.userAgent,
    'V8-Version': v.jsVersion,
    'WebKit-Version': `537.36 (${v.revision})`,
    webSocketDebuggerUrl: `ws://${DEVTOOLS_SELF}${browserPath}`,
  };
}

/** `/json/list` as Chromium answers it, from `Target.getTargets`. */
export const describeTargets = (targetInfos: TargetInfo[], withSocket: boolean) =>
  targetInfos.filter((t) => !HIDDEN_TARGET_TYPES.has(t.type)).map((t) => describeTarget(t, withSocket));

/** One `/json/list` entry; `withSocket: false` for a target no page-level socket reaches (Chromium leaves the URL out for a target it cannot hand over). */
export function describeTarget(t: TargetInfo, withSocket: boolean) {
  return {
    description: '',
    ...(withSocket ? { devtoolsFrontendUrl: `/devtools/inspector.html?ws=${DEVTOOLS_SELF}/devtools/page/${t.targetId}` } : {}),
    id: t.targetId,
    title: t.title,
    type: t.type,
    url: t.url,
    ...(withSocket ? { webSocketDebuggerUrl: `ws://${DEVTOOLS_SELF}/devtools/page/${t.targetId}` } : {}),
  };
}

/**
 * `/json/protocol`: Chromium serves the protocol it speaks; where there is no such endpoint (a pipe,
 * an image that serves CDP only on a WebSocket) the agent serves the protocol description published
 * with the same CDP revision as its clients (`devtools-protocol`, the package Puppeteer itself is built on).
 */
export async function loadProtocol(): Promise<unknown> {
  const require = createRequire(import.meta.url);
  const read = async (name: string) => JSON.parse(await readFile(require.resolve(`devtools-protocol/json/${name}`), 'utf8')) as { version: unknown; domains: unknown[] };
  const [browser, js] = await Promise.all([read('browser_protocol.json'), read('js_protocol.json')]);
  return { version: browser.version, domains: [...js.domains, ...browser.domains] };
}

/**
 * The DevTools HTTP answers of a browser that serves CDP only on one WebSocket (steel: every socket
 * there is the browser's own), made from CDP: `/json/version` (its socket is the `/devtools/browser`
 * alias), `/json/list` (without per-page sockets, which such an image cannot give) and `/json/protocol`.
 * Null for any other path: the image answers it itself.
 */
export async function devtoolsFromCdp(path: string, cdpUrl: string, protocol: () => Promise<unknown>, timeoutMs: number): Promise<DevtoolsAnswer | null> {
  const p = path.split('?')[0]!.replace(/\/+$/, '') || '/';
  if (p === '/json/version') {
    const [v] = await cdpExchange(cdpUrl, [{ method: 'Browser.getVersion' }], { timeoutMs });
    return { status: 200, body: describeVersion(v as BrowserVersion, '/devtools/browser') };
  }
  if (p === '/json' || p === '/json/list') {
    const [r] = await cdpExchange(cdpUrl, [{ method: 'Target.getTargets' }], { timeoutMs });
    return { status: 200, body: describeTargets((r as { targetInfos: TargetInfo[] }).targetInfos, false) };
  }
  if (p === '/json/protocol') return { status: 200, body: await protocol() };
  return null;
}
