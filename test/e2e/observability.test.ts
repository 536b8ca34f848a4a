import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import { CHROMIUM, startRedis, type RedisServer } from '../../harness/processes.js';
import { spawnEntry, type Spawned } from '../../harness/spawn.js';
import { bearer, json, keyedFetch, spawnRouter, TEST_KEYS, TEST_METRICS_TOKEN, TEST_TOKEN } from '../../harness/system.js';
import { goTools, runTool } from '../../harness/tools.js';

const api = keyedFetch(TEST_KEYS.user);
const MONITORING = new URL('../../infra/monitoring/', import.meta.url).pathname;
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';

type LogLine = { msg: string; level: string; [k: string]: unknown };

/** A router and an agent as processes at `level`, their log lines captured; one session's whole cycle. */
async function cycleAt(redisUrl: string, level: 'debug' | 'info') {
  const procs: Spawned[] = [];
  try {
    const router = await spawnRouter(redisUrl, { LOG_LEVEL: level });
    procs.push(router.proc);
    const agent = spawnEntry('agent/main.ts', {
      ROUTER_URL: router.url,
      AGENT_TOKEN: TEST_TOKEN,
      NODE_NAME: 'obs',
      METRICS_PORT: '0',
      METRICS_HOST: '127.0.0.1',
      CHROMIUM_PATH: CHROMIUM,
      LOG_LEVEL: level,
    });
    procs.push(agent);
    await agent.waitForLine(/tunnel connected/, 30_000);
    const agentMetricsPort = Number(JSON.parse(agent.lines.find((l) => /agent started/.test(l))!).metricsPort);
    const routerMark = router.proc.lines.length;
    const agentMark = agent.lines.length;
    const created = await json<SessionView>(api(`${router.url}/sessions?wait=true`, { method: 'POST', headers: { traceparent: TRACEPARENT } }));
    expect(created.body.status).toBe('running');
    expect((await fetch(`${created.body.proxyUrl}/json/version`)).status).toBe(200);
    const pages = {
      router: await (await fetch(`${router.url}/metrics`, { headers: bearer(TEST_METRICS_TOKEN) })).text(),
      agent: await (await fetch(`http://127.0.0.1:${agentMetricsPort}/metrics`)).text(),
    };
    expect((await json(api(`${router.url}/sessions/${created.body.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    // The last lines (the stop's RPC and stream closes) may trail the answer a little.
    await new Promise((r) => setTimeout(r, 300));
    const parse = (lines: string[]) => lines.flatMap((l) => (l.startsWith('{') ? [JSON.parse(l) as LogLine] : []));
    return { router: parse(router.proc.lines.slice(routerMark)), agent: parse(agent.lines.slice(agentMark)), pages, id: created.body.id };
  } finally {
    for (const p of procs.reverse()) await p.stop();
  }
}

describe('observability: metrics checked by promtool, alert rules, the dashboard, debug logs and trace context', () => {
  let redis: RedisServer;
  let debug: Awaited<ReturnType<typeof cycleAt>>;
  let info: Awaited<ReturnType<typeof cycleAt>>;
  const { promtool } = goTools();

  beforeAll(async () => {
    redis = await startRedis();
    debug = await cycleAt(redis.url, 'debug');
    info = await cycleAt(redis.url, 'info');
  }, 120_000);
  afterAll(async () => {
    await redis?.stop();
  });

  it("promtool finds nothing wrong with the router's and the agent's real /metrics pages", async () => {
    for (const [who, page] of Object.entries(debug.pages)) {
      expect(page.length, who).toBeGreaterThan(1000);
      const checked = await runTool(promtool, ['check', 'metrics'], page);
      expect([who, checked.code, checked.stdout + checked.stderr]).toEqual([who, 0, '']);
    }
    expect(debug.pages.router).toMatch(/^browser_sessions_total\{cluster="local"\} \d+$/m);
    // The tunnel's side: the start call and the proxied request, timed.
    expect(debug.pages.router).toMatch(/^router_tunnel_rpc_duration_seconds_count\{method="session.start",outcome="ok"\} 1$/m);
    expect(debug.pages.router).toMatch(/^router_tunnel_stream_duration_seconds_count [1-9]\d*$/m);
  });

  it('the alerting rules pass promtool check rules and their own unit tests', async () => {
    const checked = await runTool(promtool, ['check', 'rules', `${MONITORING}alerts.yaml`]);
    expect(checked.code, checked.stdout + checked.stderr).toBe(0);
    expect(checked.stdout).toMatch(/SUCCESS: 6 rules found/);
    const tested = await runTool(promtool, ['test', 'rules', `${MONITORING}alerts.test.yaml`]);
    expect(tested.code, tested.stdout + tested.stderr).toBe(0);
  });

  it('every metric the dashboard and the rules query is one the router or the agent serves', () => {
    const served = new Set(
      Object.values(debug.pages)
        .join('\n')
        .split('\n')
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(l)![0]),
    );
    const dashboard = JSON.parse(readFileSync(`${MONITORING}dashboard.json`, 'utf8')) as { panels: Array<{ targets: Array<{ expr: string }> }> };
    const exprs = [
      ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)),
      ...[...readFileSync(`${MONITORING}alerts.yaml`, 'utf8').matchAll(/expr: (?:>-\n)?([\s\S]*?)\n\s+(?:for|labels):/g)].map((m) => m[1]!),
    ];
    expect(exprs.length).toBeGreaterThan(10);
    const queried = new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:router|browser|agent)_[a-z_]+)/g)].map((m) => m[1]!)));
    expect(queried.size).toBeGreaterThan(6);
    for (const name of queried) expect(served.has(name) || served.has(`${name}_count`) || served.has(`${name}_bucket`), `${name} is not served`).toBe(true);
  });

  it('LOG_LEVEL=debug adds store operations, tunnel RPCs and proxy streams for one cycle, each with its duration; info has none of them', () => {
    const count = (lines: LogLine[], msg: string) => lines.filter((l) => l.msg === msg).length;
    const stores = debug.router.filter((l) => l.msg === 'store');
    expect(stores.length).toBeGreaterThanOrEqual(4);
    expect(stores.every((l) => typeof l.ms === 'number' && typeof l.operation === 'string' && l.ok === true)).toBe(true);
    expect([...new Set(stores.map((l) => l.operation))]).toEqual(expect.arrayContaining(['create', 'transition', 'get']));
    const rpcs = debug.router.filter((l) => l.msg === 'tunnel rpc');
    expect(rpcs.map((l) => l.method)).toEqual(expect.arrayContaining(['session.start', 'session.stop']));
    expect(rpcs.every((l) => typeof l.ms === 'number')).toBe(true);
    // The proxied request: opened by the router, accepted by the agent, closed on both, path without its query.
    expect(count(debug.router, 'proxy stream opened')).toBeGreaterThanOrEqual(1);
    expect(count(debug.router, 'proxy stream closed')).toBeGreaterThanOrEqual(1);
    expect(count(debug.agent, 'proxy stream accepted')).toBeGreaterThanOrEqual(1);
    expect(debug.router.find((l) => l.msg === 'proxy stream opened')).toMatchObject({ session: debug.id, kind: 'http', path: '/json/version' });
    for (const msg of ['store', 'tunnel rpc', 'proxy stream opened', 'proxy stream closed']) expect(count(info.router, msg), msg).toBe(0);
    expect(count(info.agent, 'proxy stream accepted')).toBe(0);
    // No secret in any of it.
    expect(JSON.stringify(debug)).not.toContain(TEST_KEYS.user);
    expect(JSON.stringify([debug.router, debug.agent])).not.toMatch(/token=/);
  });

  it("a client's traceparent is on every step's log line: the router's create and status change, the agent's start and running", () => {
    for (const run of [debug, info]) {
      const traced = (lines: LogLine[]) => lines.filter((l) => l.traceId === TRACE_ID).map((l) => l.msg);
      expect(traced(run.router)).toEqual(expect.arrayContaining(['session created', 'session status changed']));
      expect(traced(run.agent)).toEqual(expect.arrayContaining(['starting session', 'session running']));
    }
  });
});
