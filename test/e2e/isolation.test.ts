import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import { readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import CDP from 'chrome-remote-interface';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BROWSER_FIREWALL_TABLE, nftBinary } from '../../agent/runtime/browser-firewall.js';
import { groupMembers } from '../../agent/runtime/devtools.js';
import type { LocalChromiumRuntime } from '../../agent/runtime/local.js';
import type { SessionView } from '../../shared/api.js';
import { pidsMatching, startRedis, type RedisServer } from '../../harness/processes.js';
import { json, startSystem, TEST_KEYS, TEST_SESSION_SECRET, TEST_TOKEN, waitFor, type TestSystem } from '../../harness/system.js';
import { PAGES_ORIGIN, serveTestPages, serveTestPagesPuppeteer, testPageResponse } from '../helpers/pages.js';
import { criDefaultConnect } from '../helpers/public-pages.js';

const isRoot = process.getuid?.() === 0;
/** A small message cap, so going over it is cheap to test. */
const CAP = 1024 * 1024;

/** Sends one message of `bytes` on a fresh socket to `url`; resolves with the close code. */
function closeCodeForMessage(url: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('open', () => ws.send(JSON.stringify({ id: 1, method: 'Runtime.evaluate', params: { expression: `"${'x'.repeat(bytes)}".length` } })));
    ws.on('message', () => ws.close(1000));
    ws.on('close', (code) => resolve(code));
    ws.on('error', reject);
  });
}
/** A secret in the agent's own environment: it must not reach a browser. */
const CANARY = 'BSO_TEST_CANARY_SECRET';

/** A raw CDP client: commands by id, events collected. */
async function rawCdp(url: string) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let next = 1;
  const waiting = new Map<number, (m: any) => void>();
  const events: any[] = [];
  const listeners: Array<(m: any) => void> = [];
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.id !== undefined && waiting.has(m.id)) waiting.get(m.id)!(m);
    else {
      events.push(m);
      for (const l of listeners) l(m);
    }
  });
  return {
    events,
    onEvent: (l: (m: any) => void) => listeners.push(l),
    send: (method: string, params: object = {}, sessionId?: string) =>
      new Promise<any>((resolve) => {
        const id = next++;
        waiting.set(id, resolve);
        ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
      }),
    close: () => ws.close(),
  };
}

/** Inodes of the TCP sockets in LISTEN state (IPv4 and IPv6). */
async function listeningInodes(): Promise<Set<string>> {
  const out = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = (await readFile(file, 'utf8')).trim().split('\n').slice(1);
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      if (f[3] === '0A') out.add(f[9]!);
    }
  }
  return out;
}

async function socketInodesOf(pid: number): Promise<string[]> {
  const out: string[] = [];
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) out.push(m[1]!);
  }
  return out;
}

const statusField = async (pid: number, field: string) => new RegExp(`^${field}:\\s+(.*)$`, 'm').exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '';

describe('isolation: a browser cannot touch its host, its agent or another session', () => {
  let sys: TestSystem;
  let redis: RedisServer;
  const strays: string[] = [];

  beforeAll(async () => {
    process.env[CANARY] = `canary-${process.pid}-0123456789`;
    redis = await startRedis();
    sys = await startSystem({ agentEnv: { MAX_WS_MESSAGE_BYTES: String(CAP) } });
  });
  afterAll(async () => {
    await sys?.close();
    await redis?.stop();
    for (const p of strays) await rm(p, { recursive: true, force: true });
    delete process.env[CANARY];
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  const create = async () => {
    const { status, body } = await json<SessionView>(sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
    expect(status).toBe(201);
    expect(body.status).toBe('running');
    return body;
  };
  const runtime = () => sys.agents[0]!.runtime as LocalChromiumRuntime;
  const remove = (id: string) => sys.fetch(`${sys.url}/sessions/${id}`, { method: 'DELETE' });

  it('the browser runs as an unprivileged user with its sandbox on, and holds none of the agent’s environment', async () => {
    const s = await create();
    const pid = runtime().pidOf(s.id)!;
    const [uid] = (await statusField(pid, 'Uid')).split(/\s+/).map(Number);
    if (isRoot) expect(uid).not.toBe(0);
    else expect(uid).toBe(process.getuid!());
    expect(await readFile(`/proc/${pid}/cmdline`, 'utf8')).not.toContain('--no-sandbox');
    // Sandboxed renderers live in a user namespace of their own; an unsandboxed one shares the browser's.
    const browserNs = await readlink(`/proc/${pid}/ns/user`);
    let rendererNs: string[] = [];
    await waitFor(
      async () => {
        const members = await groupMembers(pid);
        const cmdlines = await Promise.all(members.map(async (p) => [p, await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')] as const));
        const renderers = cmdlines.filter(([, c]) => c.includes('--type=renderer')).map(([p]) => p);
        rendererNs = await Promise.all(renderers.map((p) => readlink(`/proc/${p}/ns/user`).catch(() => '')));
        return rendererNs.length > 0;
      },
      10_000,
      'a renderer',
    );
    for (const ns of rendererNs) expect(ns).not.toBe(browserNs);
    // Its environment: a HOME in its profile and a PATH, none of the secrets the agent and router hold.
    const environ = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter(Boolean);
    const env = new Map(environ.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
    const names = new Set(env.keys());
    // What the runtime sets itself points into the profile; every other variable of the agent's
    // environment is absent. (Debian's chromium wrapper adds CHROMIUM_FLAGS, CHROME_* and its public
    // GOOGLE_* values; the shell sets PWD.)
    const profile = runtime().profileOf(s.id)!;
    for (const own of ['HOME', 'TMPDIR', 'XDG_CONFIG_HOME', 'XDG_CACHE_HOME']) expect(env.get(own), own).toMatch(new RegExp(`^${profile}(/|$)`));
    const setByRuntime = ['HOME', 'PATH', 'LANG', 'PWD', 'TMPDIR', 'XDG_CONFIG_HOME', 'XDG_CACHE_HOME'];
    for (const inherited of Object.keys(process.env)) if (!setByRuntime.includes(inherited)) expect(names.has(inherited), inherited).toBe(false);
    expect(names.has(CANARY)).toBe(false);
    const all = environ.join('\n');
    for (const secret of [TEST_TOKEN, TEST_SESSION_SECRET, ...Object.values(TEST_KEYS), process.env[CANARY]!]) expect(all).not.toContain(secret);
    // Chromium's own temporary directory (its singleton socket) is in the profile, so it goes with it
    // even when the browser is killed and cleans up nothing itself.
    await waitFor(async () => (await readdir(join(profile, 'tmp'))).some((n) => n.startsWith('org.chromium.Chromium.')), 10_000, 'the singleton directory');
    await remove(s.id);
    expect(existsSync(profile)).toBe(false);
  });

  it('the browser opens no port: its DevTools are reachable only through the agent, so no local user or other session can drive it', async () => {
    const s = await create();
    const pid = runtime().pidOf(s.id)!;
    const browser = await chromium.connectOverCDP(s.cdpUrl);
    await serveTestPages(browser.contexts()[0]!);
    const page = await browser.contexts()[0]!.newPage();
    await page.goto(`${PAGES_ORIGIN}/`);
    const listening = await listeningInodes();
    const members = await groupMembers(pid);
    expect(members.length).toBeGreaterThan(2);
    for (const member of members) for (const inode of await socketInodesOf(member)) expect(listening.has(inode), `process ${member} listens on a TCP port`).toBe(false);
    const profile = runtime().profileOf(s.id)!;
    expect(existsSync(join(profile, 'DevToolsActivePort'))).toBe(false);
    await browser.close();
    await remove(s.id);
  });

  it.runIf(isRoot)('a page cannot reach this host: the router, Redis and the agent’s metrics refuse the browser’s account', async () => {
    const s = await create();
    const browser = await chromium.connectOverCDP(s.cdpUrl);
    const page = await browser.contexts()[0]!.newPage();
    const services = { router: `${sys.url}/livez`, redis: `http://127.0.0.1:${new URL(redis.url).port}/`, metrics: sys.agents[0]!.metricsUrl };
    for (const [name, url] of Object.entries(services)) {
      // Each one listens: this process (root) gets through, so a refusal is the firewall's.
      const port = Number(new URL(url).port);
      const probe = connect(port, '127.0.0.1');
      await once(probe, 'connect');
      probe.destroy();
      const failure = await page.goto(url, { timeout: 15_000 }).then(
        (r) => `reached it: ${r?.status()}`,
        (err: Error) => err.message,
      );
      expect(failure, name).toContain('net::ERR_CONNECTION_REFUSED');
    }
    // By the agent's rule for the browser's account.
    const firewall = await promisify(execFile)(nftBinary(), ['list', 'table', 'inet', BROWSER_FIREWALL_TABLE], { timeout: 10_000 });
    const uid = Number((await statusField(runtime().pidOf(s.id)!, 'Uid')).split(/\s+/)[0]);
    expect(firewall.stdout).toContain(`meta skuid != ${uid} accept`);
    await browser.close();
    await remove(s.id);
  });

  it('files of the host stay out of reach: /etc/shadow and /root cannot be read through CDP', async () => {
    const s = await create();
    // A file only root can list: /root's listing must not show it.
    const canary = `bso-isolation-canary-${process.pid}`;
    if (isRoot) {
      await writeFile(join('/root', canary), 'secret');
      strays.push(join('/root', canary));
    }
    const browser = await chromium.connectOverCDP(s.cdpUrl);
    for (const url of ['file:///etc/shadow', 'file:///root/']) {
      // Chromium answers with its error page (or the navigation fails, then shows it): either way, no content.
      const page = await browser.contexts()[0]!.newPage();
      // Past the commit, the page's own load is waited for below, with room for a loaded machine
      // (one suite run in ten saw a directory listing take over 30 s to finish loading).
      const failure = await page.goto(url, { waitUntil: 'commit', timeout: 20_000 }).then(
        () => '',
        (err: Error) => err.message,
      );
      let shown = '';
      let state = '';
      await waitFor(
        async () => {
          [state, shown] = await page
            .evaluate(() => [document.readyState, document.readyState === 'complete' ? document.documentElement.innerText : ''])
            .catch(() => ['unreadable', '']);
          return shown.length > 0;
        },
        45_000,
        `the page for ${url}`,
      ).catch((err: Error) => {
        throw new Error(`${err.message} (navigation: ${failure || 'committed'}; page ${page.url()}, readyState ${state})`);
      });
      await page.close();
      const text = `${failure}\n${shown}`;
      expect(text).not.toMatch(/root:[^\n]*:\d+:/); // a shadow line
      expect(text).not.toContain(canary);
      // A file it cannot read is refused; a directory it cannot read lists nothing.
      if (url.endsWith('shadow')) expect(text).toMatch(/ERR_ACCESS_DENIED|denied|not readable/i);
      else expect(shown).toMatch(/^Index of \/root\/\s*\[parent directory\]\s*Name\s+Size\s+Date Modified\s*$/);
    }
    // The profile is private to the browser's user.
    const profile = runtime().profileOf(s.id)!;
    const mode = (await import('node:fs')).statSync(profile).mode & 0o777;
    expect(mode).toBe(0o700);
    await browser.close();
    await remove(s.id);
    expect(existsSync(profile)).toBe(false);
  }, 150_000);

  it('downloads land in the session profile whatever path a client asks for', async () => {
    const s = await create();
    const profile = runtime().profileOf(s.id)!;
    const asked = join(tmpdir(), `bso-download-target-${process.pid}`);
    strays.push(asked);
    const cdp = await rawCdp(s.cdpUrl);
    const set = await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: asked, eventsEnabled: true });
    expect(set.error).toBeUndefined();
    const { result } = await cdp.send('Target.createTarget', { url: 'about:blank' });
    const { result: attached } = await cdp.send('Target.attachToTarget', { targetId: result.targetId, flatten: true });
    // The download comes from the test origin, answered over CDP (browsers may not reach this host).
    cdp.onEvent((m) => {
      if (m.method !== 'Fetch.requestPaused') return;
      const r = testPageResponse(m.params.request.url);
      const responseHeaders = Object.entries(r.headers).map(([name, value]) => ({ name, value }));
      void cdp.send('Fetch.fulfillRequest', { requestId: m.params.requestId, responseCode: r.status, responseHeaders, body: Buffer.from(r.body).toString('base64') }, m.sessionId);
    });
    await cdp.send('Fetch.enable', { patterns: [{ urlPattern: `${PAGES_ORIGIN}/*` }] }, attached.sessionId);
    await cdp.send('Page.navigate', { url: `${PAGES_ORIGIN}/download` }, attached.sessionId);
    await waitFor(() => cdp.events.some((e) => e.method === 'Browser.downloadProgress' && e.params.state === 'completed'), 15_000, 'the download');
    expect(existsSync(asked)).toBe(false);
    expect(await readdir(join(profile, 'Downloads'))).toHaveLength(1);
    // A path for a file input is held to the profile as well.
    const { result: doc } = await cdp.send('DOM.getDocument', {}, attached.sessionId);
    const refused = await cdp.send('DOM.setFileInputFiles', { files: ['/etc/passwd'], nodeId: doc.root.nodeId }, attached.sessionId);
    expect(refused.error.message).toMatch(/outside the session profile/);
    cdp.close();
    await remove(s.id);
  });

  it('a message over MAX_WS_MESSAGE_BYTES closes its socket with 1009; the session goes on', async () => {
    const s = await create();
    expect(await closeCodeForMessage(s.cdpUrl, CAP + 1024)).toBe(1009);
    expect(await closeCodeForMessage(s.cdpUrl, 1024)).toBe(1000);
    await remove(s.id);
  });

  it('several clients at once, each with its own state: Playwright, Puppeteer and chrome-remote-interface with its own /json expectations', async () => {
    const s = await create();
    const pw = await chromium.connectOverCDP(s.cdpUrl);
    const pp = await puppeteer.connect({ browserWSEndpoint: s.cdpUrl });
    await serveTestPages(pw.contexts()[0]!);
    const pwPage = await pw.contexts()[0]!.newPage();
    await pwPage.goto(`${PAGES_ORIGIN}/`);
    const ppPage = await pp.newPage();
    await serveTestPagesPuppeteer(ppPage);
    await ppPage.goto(`${PAGES_ORIGIN}/?puppeteer`);
    expect(await pwPage.evaluate(() => (window as unknown as { answer: number }).answer)).toBe(42);
    expect(await ppPage.evaluate(() => location.search)).toBe('?puppeteer');
    // chrome-remote-interface: /json/protocol, /json/list and a page's own WebSocket, all through the proxy.
    const proxy = new URL(s.proxyUrl);
    // Its `alterPath` applies to every path it uses, the WebSocket URLs the router handed out included.
    const options = { host: proxy.hostname, port: Number(proxy.port), alterPath: (p: string) => (p.startsWith(proxy.pathname) ? p : `${proxy.pathname}${p}`) };
    const protocol = await CDP.Protocol(options);
    expect(protocol.domains.map((d: { domain: string }) => d.domain)).toEqual(expect.arrayContaining(['Runtime', 'Page', 'Target']));
    const targets = await CDP.List(options);
    expect(targets.map((t: { url: string }) => t.url)).toEqual(expect.arrayContaining([`${PAGES_ORIGIN}/`, `${PAGES_ORIGIN}/?puppeteer`]));
    const target = targets.find((t: { url: string }) => t.url === `${PAGES_ORIGIN}/`)!;
    const cri = await CDP({ ...options, target: target.webSocketDebuggerUrl });
    const evaluated = await cri.Runtime.evaluate({ expression: 'document.title + ":" + window.answer' });
    expect(evaluated.result.value).toBe('bso test page:42');
    await cri.close();
    // Its plainest form, `CDP({ target: cdpUrl })`, asks the router's root for /json/protocol.
    expect(await criDefaultConnect(s.cdpUrl)).toMatch(/^(Headless)?Chrome\//);
    // Each client still works after another left; a session id of another client is not reachable.
    await pp.disconnect();
    expect(await pwPage.title()).toBe('bso test page');
    const raw = await rawCdp(s.cdpUrl);
    const other = await raw.send('Runtime.evaluate', { expression: '1' }, 'F'.repeat(32));
    expect(other.error.message).toMatch(/not found/);
    raw.close();
    await pw.close();
    await remove(s.id);
  });
});

describe('bounded: the router holds no client message over MAX_WS_MESSAGE_BYTES (messages mode)', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ routerEnv: { WS_PROXY_MODE: 'messages', MAX_WS_MESSAGE_BYTES: String(CAP) } });
  });
  afterAll(async () => {
    await sys?.close();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  it('closes with 1009 at the router, and the next socket works', async () => {
    const { body: s } = await json<SessionView>(sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
    expect(s.status).toBe('running');
    expect(await closeCodeForMessage(s.cdpUrl, 8 * CAP)).toBe(1009);
    expect(await closeCodeForMessage(s.cdpUrl, 1024)).toBe(1000);
    await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
  });
});
