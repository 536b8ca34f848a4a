import { describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { BROWSER_FIREWALL_TABLE, browserFirewallScript } from '../../agent/runtime/browser-firewall.js';
import { backoffDelay, startLoop } from '../../shared/clock.js';
import { ConfigError } from '../../shared/env.js';
import { canTransition, type Session } from '../../shared/session.js';
import { loadRouterConfig } from '../../router/config.js';
import { isDevtoolsJsonPath, proxyRequestParts, rewriteDevtoolsUrls, streamSpecFor } from '../../router/data-plane/target.js';
import { sendableCloseCode } from '../../shared/ws-frames.js';
import { applyChange } from '../../router/store/transition.js';
import { ManualClock } from '../helpers/clock.js';

const base: Session = {
  id: 'aaaaaaaa-1111',
  status: 'pending',
  createdAt: 1,
  updatedAt: 1,
  expiresAt: 100_000,
  timeout: 100,
  idleTimeout: 50,
  options: {},
  cluster: 'c',
};

describe('session transitions', () => {
  it('allows forward moves only', () => {
    expect(canTransition('pending', 'running')).toBe(true);
    expect(canTransition('running', 'pending')).toBe(false);
    expect(canTransition('terminated', 'running')).toBe(false);
    expect(canTransition('failed', 'terminated')).toBe(false);
  });
  it('stamps startedAt on running and endedAt on a terminal status, dropping endpoints', () => {
    const running = applyChange(base, { status: 'running', endpoints: { host: 'h', apiPort: 1, browserWsPath: '/devtools/browser/x' } }, 50);
    expect(running).toMatchObject({ status: 'running', startedAt: 50, updatedAt: 50 });
    const ended = applyChange(running, { status: 'terminated' }, 60);
    expect(ended).toMatchObject({ status: 'terminated', endedAt: 60 });
    expect(ended.endpoints).toBeUndefined();
  });
  it('returns the same object for refused or empty changes', () => {
    const ended = applyChange(base, { status: 'failed', failureReason: 'x' }, 5);
    expect(applyChange(ended, { status: 'running' }, 6)).toBe(ended);
    expect(applyChange(base, { status: 'pending' }, 7)).toBe(base);
  });
});

describe('config', () => {
  it('names the bad variable', () => {
    expect(() => loadRouterConfig({ AGENT_TOKEN: 'x'.repeat(20), MAX_SESSIONS: 'lots' })).toThrow(/MAX_SESSIONS/);
    expect(() => loadRouterConfig({})).toThrow(ConfigError);
    expect(() => loadRouterConfig({})).toThrow(/AGENT_TOKEN/);
    expect(() => loadAgentConfig({ AGENT_TOKEN: 'x'.repeat(20), ROUTER_URL: 'ftp://x' }, false)).toThrow(/ROUTER_URL/);
  });
  it('reads the seed variables and picks the store', () => {
    const c = loadRouterConfig({
      AGENT_TOKEN: 'x'.repeat(20),
      REDIS_HOST: 'r',
      REDIS_PORT: '6380',
      REDIS_PASSWORD: 'p',
      SESSION_TIMEOUT: '60',
      MAX_SESSIONS: '3',
      LOG_LEVEL: 'WARN',
    });
    expect(c).toMatchObject({ redis: { host: 'r', port: 6380, password: 'p' }, sessionTimeoutSec: 60, maxSessions: 3, logLevel: 'warn' });
    expect(loadRouterConfig({ AGENT_TOKEN: 'x'.repeat(20) }).redis).toBeNull();
    expect(loadAgentConfig({ AGENT_TOKEN: 'x'.repeat(20), ROUTER_URL: 'http://r:3000', ALLOW_INSECURE_TUNNEL: 'true' }, true)).toMatchObject({
      routerUrl: 'ws://r:3000/agent/connect?cluster=local',
      // A root agent runs browsers as the unprivileged account, sandbox on unless said otherwise.
      chromiumUser: 'bso-chromium',
      noSandbox: false,
    });
    expect(loadAgentConfig({ AGENT_TOKEN: 'x'.repeat(20), ROUTER_URL: 'http://127.0.0.1:3000', CHROMIUM_NO_SANDBOX: 'true' }, false)).toMatchObject({
      chromiumUser: undefined,
      noSandbox: true,
    });
    expect(() => loadAgentConfig({ AGENT_TOKEN: 'x'.repeat(20), ROUTER_URL: 'https://r', CHROMIUM_USER: 'root; rm -rf /' }, true)).toThrow(/CHROMIUM_USER/);
  });

  it.each([
    ['ws://router.example.com', false],
    ['http://10.0.0.5:3000', false],
    ['wss://router.example.com', true],
    ['https://router.example.com', true],
    ['ws://127.0.0.1:3000', true],
    ['http://localhost:3000', true],
    ['ws://[::1]:3000', true],
  ])('the agent token goes over cleartext only to loopback unless ALLOW_INSECURE_TUNNEL: %s → %s', (url, allowed) => {
    const load = (extra: Record<string, string> = {}) => loadAgentConfig({ AGENT_TOKEN: 'x'.repeat(20), ROUTER_URL: url, ...extra }, false);
    if (allowed) expect(load().routerUrl).toMatch(/^wss?:\/\//);
    else {
      expect(load).toThrow(/ALLOW_INSECURE_TUNNEL/);
      expect(() => load()).not.toThrow(/x{20}/);
      expect(load({ ALLOW_INSECURE_TUNNEL: 'true' }).routerUrl).toMatch(/^ws:\/\//);
    }
  });
});

describe('proxy target', () => {
  it('rewrites browser WebSocket URLs to the router', () => {
    const body = JSON.stringify({
      webSocketDebuggerUrl: 'ws://127.0.0.1:9222/devtools/browser/abc',
      devtoolsFrontendUrl: '/devtools/inspector.html?ws=127.0.0.1:9222/devtools/page/P1',
    });
    const out = JSON.parse(rewriteDevtoolsUrls(body, 'wss://r.example', 'sid-12345678'));
    expect(out.webSocketDebuggerUrl).toBe('wss://r.example/sessions/sid-12345678/proxy/devtools/browser/abc');
    expect(out.devtoolsFrontendUrl).toBe('/devtools/inspector.html?ws=r.example/sessions/sid-12345678/proxy/devtools/page/P1');
    const withToken = JSON.parse(rewriteDevtoolsUrls(body, 'wss://r.example', 'sid-12345678', 'key_a.99.sig'));
    expect(withToken.webSocketDebuggerUrl).toBe('wss://r.example/sessions/sid-12345678/proxy/~key_a.99.sig/devtools/browser/abc');
    expect(withToken.devtoolsFrontendUrl).toBe('/devtools/inspector.html?ws=r.example/sessions/sid-12345678/proxy/~key_a.99.sig/devtools/page/P1');
  });
  it('knows which paths carry DevTools JSON', () => {
    expect(isDevtoolsJsonPath('/json/version')).toBe(true);
    expect(isDevtoolsJsonPath('/json/list/')).toBe(true);
    expect(isDevtoolsJsonPath('/json')).toBe(true);
    expect(isDevtoolsJsonPath('/json/protocol')).toBe(false);
  });
  it('routes /ui to the UI port and keeps the query', () => {
    const s = { ...base, status: 'running' as const };
    expect(streamSpecFor(s, 'http', 'GET', '/ui/index.html?a=1', {})).toMatchObject({ target: 'ui', path: '/index.html?a=1' });
    expect(streamSpecFor(s, 'http', 'GET', '/json/version', {})).toMatchObject({ target: 'api', path: '/json/version' });
    expect(proxyRequestParts(new URL('http://h/sessions/abc/proxy/json?x=1'), 'abc')).toEqual({ token: null, path: '/json?x=1' });
    expect(proxyRequestParts(new URL('http://h/sessions/abc/proxy'), 'abc')).toEqual({ token: null, path: '/' });
    // The token never reaches the browser, in either place; the rest of the query stays as written.
    expect(proxyRequestParts(new URL('http://h/sessions/abc/proxy/~k.1.sig/json/new?about:blank'), 'abc')).toEqual({ token: 'k.1.sig', path: '/json/new?about:blank' });
    expect(proxyRequestParts(new URL('http://h/sessions/abc/proxy/~k.1.sig'), 'abc')).toEqual({ token: 'k.1.sig', path: '/' });
    expect(proxyRequestParts(new URL('http://h/sessions/abc/proxy/devtools/browser?a=1&token=k.2.s&b=%41'), 'abc')).toEqual({
      token: 'k.2.s',
      path: '/devtools/browser?a=1&b=%41',
    });
    expect(proxyRequestParts(new URL('http://h/sessions/abc/proxy/json?token=%E0%A4%A'), 'abc')).toEqual({ token: '', path: '/json' });
  });
  it('never puts a reserved code in a close frame', () => {
    expect(sendableCloseCode(1006)).toBe(1000);
    expect(sendableCloseCode(1005, 1011)).toBe(1011);
    expect(sendableCloseCode(4001)).toBe(4001);
    expect(sendableCloseCode(1001)).toBe(1001);
  });
});

describe('backoff and loops', () => {
  it('grows, caps and jitters', () => {
    expect(backoffDelay(0, 100, 1000, () => 0)).toBe(50);
    expect(backoffDelay(0, 100, 1000, () => 0.999)).toBeLessThan(100);
    expect(backoffDelay(3, 100, 1000, () => 1)).toBe(800);
    expect(backoffDelay(30, 100, 1000, () => 1)).toBe(1000);
  });
  it('never overlaps ticks, survives a throwing tick and stops', async () => {
    const clock = new ManualClock();
    let running = 0;
    let maxConcurrent = 0;
    let ticks = 0;
    const errors: unknown[] = [];
    let release!: () => void;
    const loop = startLoop({
      clock,
      intervalMs: 100,
      onError: (e) => errors.push(e),
      tick: async () => {
        ticks++;
        running++;
        maxConcurrent = Math.max(maxConcurrent, running);
        if (ticks === 1) await new Promise<void>((r) => (release = r));
        running--;
        if (ticks === 2) throw new Error('boom');
      },
    });
    clock.advance(100);
    clock.advance(1000); // tick 1 still running: nothing new may start
    expect(ticks).toBe(1);
    release();
    await new Promise((r) => setTimeout(r, 0));
    clock.advance(100);
    await new Promise((r) => setTimeout(r, 0));
    expect(ticks).toBe(2);
    expect(errors).toHaveLength(1);
    await loop.stop();
    clock.advance(1000);
    expect(ticks).toBe(2);
    expect(maxConcurrent).toBe(1);
  });
});

describe('.env', () => {
  it('fills what the environment lacks and never overrides it', async () => {
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { readNodeEnv } = await import('../../shared/node-env.js');
    const dir = await mkdtemp(join(tmpdir(), 'bso-env-'));
    try {
      await writeFile(join(dir, '.env'), 'BSO_TEST_FROM_FILE=file\nPATH=/from/file\n');
      const env = readNodeEnv({ dotenvPath: join(dir, '.env') });
      expect(env.BSO_TEST_FROM_FILE).toBe('file');
      expect(env.PATH).toBe(process.env.PATH);
      expect(readNodeEnv({ dotenvPath: join(dir, 'missing.env') }).BSO_TEST_FROM_FILE).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('browser firewall rules', () => {
  it('refuse new connections of the browser account to this host and link-local, keep DNS and replies', () => {
    const script = browserFirewallScript(999);
    const rules = script.split('\n').map((l) => l.trim());
    // Swapped in one transaction: the table exists, is deleted and made again by the same script.
    expect(rules.slice(0, 3)).toEqual([`table inet ${BROWSER_FIREWALL_TABLE} {}`, `delete table inet ${BROWSER_FIREWALL_TABLE}`, `table inet ${BROWSER_FIREWALL_TABLE} {`]);
    const chain = rules.slice(rules.indexOf('type filter hook output priority filter; policy accept;') + 1, rules.lastIndexOf('}') - 1);
    // Order matters: other accounts pass, then DNS, then new TCP connections are refused while replies pass, then the rest.
    expect(chain).toEqual([
      'meta skuid != 999 accept',
      'oif "lo" meta l4proto { tcp, udp } th dport 53 accept',
      'oif "lo" tcp flags & (syn | ack) == syn reject with tcp reset',
      'oif "lo" meta l4proto tcp accept',
      'oif "lo" reject',
      'ip daddr 169.254.0.0/16 reject',
      'ip6 daddr fe80::/10 reject',
    ]);
  });
  it.each([0, -1, 1.5, Number.NaN])('refuses uid %s (root, or not a uid)', (uid) => {
    expect(() => browserFirewallScript(uid)).toThrow(/positive integer/);
  });
});
