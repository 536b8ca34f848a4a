import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalChromiumRuntime } from '../../agent/runtime/local.js';
import { browserUserOfThisProcess } from '../../agent/runtime/chromium.js';
import type { BrowserRuntime } from '../../agent/runtime/types.js';
import type { SessionView } from '../../shared/api.js';
import { createLogger } from '../../shared/logger.js';
import { startPageServer } from '../helpers/pages.js';
import { renderedDocs } from '../helpers/public-pages.js';
import { CHROMIUM, pidsMatching, startRedis, type RedisServer } from '../../harness/processes.js';
import { bearer, json, keyedFetch, startSystem, TEST_KEYS, TEST_METRICS_TOKEN, waitFor, type TestSystem } from '../../harness/system.js';

/** The agent of the agent-loss suite holds each session to this many WebSockets. */
const WS_PER_SESSION = 3;

const createSession = async (url: string, body: object = {}) => {
  const res = await json<SessionView>(
    keyedFetch(TEST_KEYS.user)(`${url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  );
  expect(res.status).toBe(201);
  expect(res.body.status).toBe('running');
  return res.body;
};

describe('deadlines, metrics and docs', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => {
    await sys?.close();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  it('the hard timeout and the idle timeout end sessions, closing open CDP sockets with a reason', async () => {
    const hard = await createSession(sys.url, { timeout: 5, idleTimeout: 300 });
    const idle = await createSession(sys.url, { timeout: 300, idleTimeout: 5 });
    const ws = new WebSocket(hard.cdpUrl);
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    const closed = new Promise<[number, string]>((r) => ws.once('close', (code, reason) => r([code, reason.toString()])));
    // Traffic on the hard-timeout session keeps it from idling; the hard limit still ends it.
    const keepBusy = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ id: 1, method: 'Browser.getVersion' })), 500);
    try {
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/sessions/${hard.id}/status`))).body.status === 'timed_out', 12_000, 'hard timeout');
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/sessions/${idle.id}/status`))).body.status === 'timed_out', 12_000, 'idle timeout');
    } finally {
      clearInterval(keepBusy);
    }
    expect(await closed).toEqual([1001, 'session timeout reached']);
    const idleView = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${idle.id}`));
    expect(idleView.body.failureReason).toBe('idle timeout');
    expect(idleView.body.endedAt! - idleView.body.startedAt!).toBeGreaterThanOrEqual(5000);
    await waitFor(async () => (await pidsMatching('bso-chromium-')).length === 0, 5000, 'browsers gone');
  });

  it('the agent serves Prometheus metrics that follow the sessions', async () => {
    const text = await (await fetch(sys.agents[0]!.metricsUrl)).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('browser_sessions_total')).toBe(2);
    expect(value('browser_sessions_running')).toBe(0);
    expect(value('browser_sessions_pending')).toBe(0);
    expect(value('browser_sessions_failed_total')).toBe(0);
    expect(value('browser_session_create_to_ready_seconds_count')).toBe(2);
  });

  it('the router serves metrics and an OpenAPI document', async () => {
    const metrics = await fetch(`${sys.url}/metrics`, { headers: bearer(TEST_METRICS_TOKEN) });
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    const text = await metrics.text();
    expect(text).toMatch(/router_http_request_duration_seconds_count\{method="POST",route="\/sessions",status="201"\} 2/);
    expect(text).toMatch(/router_agents_connected 1/);
    // The whole fleet's session metrics, from the store, by cluster: the same numbers the one agent counted.
    const fleet = (name: string) => Number(new RegExp(`^${name}\\{cluster="local"\\} (\\S+)$`, 'm').exec(text)?.[1]);
    expect([fleet('browser_sessions_total'), fleet('browser_sessions_failed_total'), fleet('browser_sessions_running'), fleet('browser_sessions_pending')]).toEqual([2, 0, 0, 0]);
    expect(text).toMatch(/^# TYPE browser_sessions_total counter$/m);
    expect(text).toMatch(/^router_store_operation_duration_seconds_count\{operation="create",outcome="ok"\} 2$/m);
    const doc = await json(sys.fetch(`${sys.url}/openapi.json`));
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/sessions', '/sessions/{id}/status', '/sessions/{id}', '/health']));
    expect(doc.body.paths['/sessions'].post.requestBody.content['application/json'].schema.properties).toHaveProperty('idleTimeout');
  });

  it('/docs renders Swagger UI from the router alone (its files ship with the router; no CDN), listing the operations', async () => {
    const docs = await renderedDocs(sys.url);
    expect(docs.offRouter).toEqual([]);
    expect(docs.failed).toEqual([]);
    expect(docs.paths).toEqual(expect.arrayContaining(['/sessions', '/sessions/{id}', '/sessions/{id}/status', '/health']));
    const css = await fetch(`${sys.url}/docs/swagger-ui.css`);
    expect([css.status, css.headers.get('content-type')]).toEqual([200, 'text/css; charset=utf-8']);
  });
});

for (const wsMode of ['splice', 'messages'] as const)
  describe(`agent loss (${wsMode} WebSocket proxy)`, () => {
    let sys: TestSystem;
    let pages: Awaited<ReturnType<typeof startPageServer>>;
    beforeAll(async () => {
      pages = await startPageServer();
      sys = await startSystem({ agents: 0, routerEnv: { WS_PROXY_MODE: wsMode } });
      const local = new LocalChromiumRuntime({
        executablePath: CHROMIUM,
        noSandbox: false,
        user: await browserUserOfThisProcess(),
        maxBrowsers: 4,
        startTimeoutMs: 30_000,
        logger: createLogger({ level: 'silent' }),
      });
      // The page server stands in for a UI sidecar so a proxied request can be held open.
      const withUi: BrowserRuntime = {
        name: 'local',
        start: async (s, signal) => {
          const h = await local.start(s, signal);
          return { ...h, endpoints: { host: '127.0.0.1', uiPort: Number(new URL(pages.url).port) } };
        },
        stop: (id) => local.stop(id),
        stopAll: () => local.stopAll(),
      };
      const { startAgent } = await import('../../agent/main.js');
      const { loadAgentConfig } = await import('../../agent/config.js');
      const { TEST_TOKEN } = await import('../../harness/system.js');
      sys.agents.push(
        await startAgent(
          loadAgentConfig(
            { ROUTER_URL: sys.url, AGENT_TOKEN: TEST_TOKEN, NODE_NAME: 'n1', METRICS_PORT: '0', MAX_DEVTOOLS_CONNECTIONS: String(WS_PER_SESSION), LOG_LEVEL: 'silent' },
            process.getuid?.() === 0,
          ),
          {
            runtime: withUi,
          },
        ),
      );
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/health`))).body.agents.length === 1, 5000, 'agent');
    });
    afterAll(async () => {
      await sys?.close();
      await pages?.close();
      expect(await pidsMatching('bso-chromium-')).toEqual([]);
    });

    it('holds a session to MAX_DEVTOOLS_CONNECTIONS WebSockets at a port (the UI): one more gets 429, a freed one is taken again', async () => {
      const s = await createSession(sys.url);
      const open = (): Promise<WebSocket | number> =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`${s.proxyUrl}/ui/ws`);
          ws.once('open', () => resolve(ws));
          ws.once('unexpected-response', (_req, res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          ws.once('error', reject);
        });
      const sockets = [];
      for (let i = 0; i < WS_PER_SESSION; i++) sockets.push(await open());
      expect(sockets.every((w) => w instanceof WebSocket)).toBe(true);
      expect(await open()).toBe(429);
      // The ones open still carry messages.
      const first = sockets[0] as WebSocket;
      const echoed = new Promise<string>((r) => first.once('message', (d) => r(d.toString())));
      first.send('still here');
      expect(await echoed).toBe('still here');
      await new Promise<void>((r) => {
        first.once('close', () => r());
        first.close(1000);
      });
      await waitFor(
        async () => {
          const again = await open();
          if (again instanceof WebSocket) sockets[0] = again;
          return again instanceof WebSocket;
        },
        5000,
        'a freed WebSocket slot',
      );
      for (const w of sockets) (w as WebSocket).terminate();
      await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    });

    it('streams large request and response bodies both ways, on the Node and the fetch path', async () => {
      const s = await createSession(sys.url);
      const body = Buffer.alloc(3 * 1024 * 1024 + 17);
      for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
      const viaNode = await fetch(`${s.proxyUrl}/ui/echo`, { method: 'POST', body });
      expect(viaNode.status).toBe(200);
      expect(viaNode.headers.get('x-method')).toBe('POST');
      expect(Buffer.from(await viaNode.arrayBuffer()).equals(body)).toBe(true);
      const viaFetch = await sys.router!.app.fetch(new Request(`${s.proxyUrl}/ui/echo`, { method: 'PUT', body }));
      expect(viaFetch.headers.get('x-method')).toBe('PUT');
      expect(Buffer.from(await viaFetch.arrayBuffer()).equals(body)).toBe(true);
      await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    });

    it('a drop mid-request fails that request with 503, leaves the session running, and the tunnel comes back', async () => {
      const s = await createSession(sys.url);
      const uiOk = await fetch(`${s.proxyUrl}/ui/`);
      expect(uiOk.status).toBe(200);
      expect(await uiOk.text()).toContain('Hello from the test');
      const cdp = new WebSocket(s.cdpUrl);
      await new Promise((r, j) => cdp.once('open', r).once('error', j));
      const cdpClosed = new Promise<number>((r) => cdp.once('close', (code) => r(code)));

      const inFlight = fetch(`${s.proxyUrl}/ui/slow`);
      await waitFor(() => pages.slowWaiting() === 1, 5000, 'request to reach the upstream');
      sys.agents[0]!.tunnel.disconnect();
      const res = await inFlight;
      const body = await res.json();
      expect(res.status).toBe(503);
      expect(body).toMatchObject({ error: { code: 'AGENT_DISCONNECTED' } });
      expect(await cdpClosed).toBe(1011);

      const status = await json(sys.fetch(`${sys.url}/sessions/${s.id}/status`));
      expect(status.body.status).toBe('running');
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/sessions/${s.id}/status`))).body.health.agentConnected === true, 10_000, 'reconnect');
      const again = await json(fetch(`${s.proxyUrl}/json/version`));
      expect(again.status).toBe(200);
      pages.releaseSlow();
      await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    });

    it('a session deleted while its agent was away is stopped when the agent reconnects', async () => {
      const s = await createSession(sys.url);
      const agent = sys.agents[0]!;
      // Hold the agent away long enough for the DELETE to find no tunnel.
      agent.tunnel.disconnect();
      const del = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }));
      expect(del.body.status).toBe('terminated');
      await waitFor(() => agent.sessions.ids().length === 0, 15_000, 'agent to stop the orphan');
      await waitFor(async () => (await pidsMatching('bso-chromium-')).length === 0, 5000, 'browser gone');
    });
  });

describe('store data loss', () => {
  let redis: RedisServer;
  let sys: TestSystem;
  beforeAll(async () => {
    redis = await startRedis();
    sys = await startSystem({ routerEnv: { REDIS_URL: redis.url }, agentEnv: { SYNC_INTERVAL_MS: '300' } });
  });
  afterAll(async () => {
    await sys?.close();
    await redis?.stop();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  it('running sessions are rebuilt from the agent after Redis loses its data, and keep working', async () => {
    const s = await createSession(sys.url);
    const { Redis } = await import('ioredis');
    const r = new Redis(redis.url);
    // The agent syncs every 300 ms, so the record may be back before any read here could see it gone;
    // that it comes back at all, with its original times, after everything was flushed is the point.
    expect(await r.flushall()).toBe('OK');
    r.disconnect();
    await waitFor(async () => (await sys.fetch(`${sys.url}/sessions/${s.id}`)).status === 200, 5000, 'rebuild');
    const back = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`));
    expect(back.body).toMatchObject({ id: s.id, status: 'running', createdAt: s.createdAt, expiresAt: s.expiresAt });
    expect((await fetch(`${s.proxyUrl}/json/version`)).status).toBe(200);
    // It holds a capacity slot again, and deleting it stops the browser.
    expect((await json(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    await waitFor(async () => (await pidsMatching('bso-chromium-')).length === 0, 5000, 'browser gone');
  });
});

describe('store outage', () => {
  let redis: RedisServer;
  let sys: TestSystem;
  beforeAll(async () => {
    redis = await startRedis();
    sys = await startSystem({ routerEnv: { REDIS_URL: redis.url }, agents: 0 });
  });
  afterAll(async () => {
    await sys?.close();
    await redis?.stop();
  });

  it('/health and /readyz are 503 and API calls answer 503 STORE_UNAVAILABLE while Redis is down; /livez stays 200', async () => {
    expect((await sys.fetch(`${sys.url}/health`)).status).toBe(200);
    expect((await fetch(`${sys.url}/readyz`)).status).toBe(200);
    await redis.stop();
    // Liveness never depends on the store: a Redis outage restarts no router.
    expect((await fetch(`${sys.url}/livez`)).status).toBe(200);
    expect((await fetch(`${sys.url}/readyz`)).status).toBe(503);
    const health = await json(sys.fetch(`${sys.url}/health`));
    expect(health.status).toBe(503);
    expect(health.body.store.ok).toBe(false);
    const get = await json(sys.fetch(`${sys.url}/sessions/00000000-0000-4000-8000-000000000000`));
    expect(get.status).toBe(503);
    expect(get.body.error.code).toBe('STORE_UNAVAILABLE');
    // A scrape still answers, without the fleet's numbers (their series go absent), and counts the miss.
    const metrics = await fetch(`${sys.url}/metrics`, { headers: bearer(TEST_METRICS_TOKEN) });
    const text = await metrics.text();
    expect(metrics.status).toBe(200);
    expect(text).toMatch(/^router_fleet_read_errors_total 1$/m);
    expect(text).not.toMatch(/^browser_sessions_total\{/m);
    expect(text).toMatch(/^router_store_operation_duration_seconds_count\{operation="get",outcome="error"\} [1-9]/m);
  });
});
