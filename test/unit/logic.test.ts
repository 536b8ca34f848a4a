import { parseTraceparent } from '../../shared/trace.js';
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parse as parseDotenv } from 'dotenv';
import { AGENT_VARIABLES, loadAgentConfig } from '../../agent/config.js';
import { BROWSER_FIREWALL_TABLE, browserFirewallScript } from '../../agent/runtime/browser-firewall.js';
import { backoffDelay, startLoop } from '../../shared/clock.js';
import { ConfigError } from '../../shared/env.js';
import { canTransition, type Session } from '../../shared/session.js';
import { loadRouterConfig, ROUTER_VARIABLES } from '../../router/config.js';
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

  it("the specification's .env under the local runtime: its Kubernetes settings are named, once, as ignored", () => {
    const env = {
      AGENT_TOKEN: 'x'.repeat(20),
      ROUTER_URL: 'http://127.0.0.1:3000',
      BROWSER_API_IMAGE: 'steel-dev/steel-browser-api:latest',
      BROWSER_API_PORT: '3000',
      K8S_NAMESPACE: 'browsers',
      POD_CPU_LIMIT: '2',
      UI_CPU_LIMIT: '',
      LOG_LEVEL: 'info',
    };
    expect(loadAgentConfig(env, false).ignoredVariables).toEqual(['BROWSER_API_IMAGE', 'BROWSER_API_PORT', 'K8S_NAMESPACE', 'POD_CPU_LIMIT']);
    const kube = loadAgentConfig({ ...env, AGENT_RUNTIME: 'kubernetes' }, false);
    expect(kube.ignoredVariables).toEqual([]);
    // The profile follows the image's name, and its ports their defaults when unset.
    expect(kube.kubernetes).toMatchObject({ profile: 'steel', apiPort: 3000, uiPort: 5173 });
    expect(loadAgentConfig({ ...env, AGENT_RUNTIME: 'kubernetes', BROWSER_API_IMAGE: 'bso/browser-api:1', BROWSER_API_PORT: '' }, false).kubernetes).toMatchObject({
      profile: 'chromium',
      apiPort: 9222,
    });
    expect(() => loadAgentConfig({ ...env, BROWSER_PROFILE: 'firefox' }, false)).toThrow(/BROWSER_PROFILE/);
  });

  it('a warm pool must fit: in LOCAL_MAX_BROWSERS locally; on Kubernetes only with an image that can run warm (not steel, whose pod is made for its session)', () => {
    const env = { AGENT_TOKEN: 'x'.repeat(20), ROUTER_URL: 'http://127.0.0.1:3000', WARM_POOL_SIZE: '4' };
    expect(loadAgentConfig({ ...env, LOCAL_MAX_BROWSERS: '4' }, false).warmPool).toMatchObject({ size: 4, minSize: 1 });
    expect(() => loadAgentConfig({ ...env, LOCAL_MAX_BROWSERS: '3' }, false)).toThrow(/WARM_POOL_SIZE: 4 warm browsers cannot fit in LOCAL_MAX_BROWSERS=3/);
    const kube = { ...env, AGENT_RUNTIME: 'kubernetes', LOCAL_MAX_BROWSERS: '1' };
    expect(loadAgentConfig({ ...kube, BROWSER_API_IMAGE: 'bso/browser-api:1' }, false).warmPool.size).toBe(4);
    expect(() => loadAgentConfig({ ...kube, BROWSER_API_IMAGE: 'ghcr.io/steel-dev/steel-browser-api:latest' }, false)).toThrow(
      /WARM_POOL_SIZE: the steel profile cannot keep warm pods/,
    );
    expect(() => loadAgentConfig({ ...kube, BROWSER_PROFILE: 'steel' }, false)).toThrow(/steel profile/);
    expect(loadAgentConfig({ ...kube, BROWSER_PROFILE: 'steel', WARM_POOL_SIZE: '0' }, false).warmPool.size).toBe(0);
  });

  it(".env.example: the specification's .env as written, every variable of router and agent with a comment, and both load it", () => {
    const text = readFileSync(new URL('../../.env.example', import.meta.url), 'utf8');
    const lines = text.split('\n');
    const listed = new Map<string, number>();
    lines.forEach((line, i) => {
      const m = /^#? ?([A-Z][A-Z0-9_]*)=/.exec(line);
      if (m) listed.set(m[1]!, i);
    });
    for (const name of new Set([...ROUTER_VARIABLES(), ...AGENT_VARIABLES()])) {
      expect(listed.has(name), name).toBe(true);
      // A comment line right above it, or above the group it is in.
      expect(
        lines.slice(0, listed.get(name)!).some((l) => l.startsWith('# ') && !/^# ?[A-Z][A-Z0-9_]*=/.test(l)),
        name,
      ).toBe(true);
    }
    for (const line of [
      'BROWSER_API_IMAGE=steel-dev/steel-browser-api:latest',
      'BROWSER_API_PORT=3000',
      'BROWSER_UI_IMAGE=steel-dev/steel-browser-ui:latest',
      'BROWSER_UI_PORT=5173',
    ]) {
      expect(lines).toContain(line);
    }
    const env = { ...parseDotenv(text), AGENT_TOKEN: 'x'.repeat(20), ROUTER_URL: 'http://127.0.0.1:3000' };
    expect(loadRouterConfig(env).maxSessions).toBe(10);
    expect(loadAgentConfig({ ...env, AGENT_RUNTIME: 'kubernetes' }, false).kubernetes).toMatchObject({ profile: 'steel', apiPort: 3000, uiPort: 5173 });
  });

  it('SESSION_HOST_SUFFIX is a DNS name', () => {
    const base = { AGENT_TOKEN: 'x'.repeat(20) };
    expect(loadRouterConfig({ ...base, SESSION_HOST_SUFFIX: 'Sessions.Example.com' }).sessionHosts).toEqual({ suffix: 'sessions.example.com', target: 'ui' });
    expect(loadRouterConfig({ ...base, SESSION_HOST_SUFFIX: 'localhost', SESSION_HOST_TARGET: 'api' }).sessionHosts).toEqual({ suffix: 'localhost', target: 'api' });
    expect(loadRouterConfig(base).sessionHosts).toBeUndefined();
    for (const bad of ['*.example.com', 'http://x', 'a..b', '-x.com']) expect(() => loadRouterConfig({ ...base, SESSION_HOST_SUFFIX: bad }), bad).toThrow(/SESSION_HOST_SUFFIX/);
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
    // A session host names its container: the path is then the container's own, `/ui` included.
    expect(streamSpecFor(s, 'http', 'GET', '/ui/index.html', {}, 'api')).toMatchObject({ target: 'api', path: '/ui/index.html' });
    expect(streamSpecFor(s, 'ws', 'GET', '/assets/app.js', {}, 'ui')).toMatchObject({ target: 'ui', path: '/assets/app.js' });
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

describe('traceparent (W3C Trace Context)', () => {
  it.each([
    ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    ['  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00'],
    ['00-00000000000000000000000000000000-00f067aa0ba902b7-01', undefined],
    ['00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01', undefined],
    ['ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', undefined],
    ['00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01', undefined],
    ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7', undefined],
    ['', undefined],
    [null, undefined],
  ])('%j → %j', (header, parsed) => {
    expect(parseTraceparent(header)).toBe(parsed);
  });
});
