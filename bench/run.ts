/**
 * `npm run bench`: measures the tunnel against Chromium directly and against a single-hop proxy
 * (http-proxy-3, what steel-browser and browserless use), create-to-ready against a bare Chromium
 * launch, and status reads against Redis; prints one table with ratios and the floors.
 */
import { Redis } from 'ioredis';
import { killChromium, launchChromium } from '../agent/runtime/chromium.js';
import { CHROMIUM, pidsMatching, requireBinary, startRedis } from '../harness/processes.js';
import { spawnEntry, type Spawned } from '../harness/spawn.js';
import { startEdgeRouter } from '../harness/edge.js';
import { startUpstashRest } from '../harness/upstash-rest.js';
import { cdpClient, cdpRoundTrips, cdpThroughput, httpLoad, stats } from './load.js';

const TOKEN = 'bench-token-0123456789abcdef';
const quick = process.argv.includes('--quick');
const ROUND_TRIPS = quick ? 300 : 1000;
const LOAD_MS = quick ? 1000 : 2000;
const ROUNDS = quick ? 3 : 5;
const STARTS = quick ? 5 : 20;
const noSandbox = process.getuid?.() === 0;

type Row = { metric: string; direct?: string; proxy?: string; tunnel: string; ratio: string; floor: string; ok: boolean | null };
const rows: Row[] = [];
const f = (n: number, d = 2) => n.toFixed(d);
const range = (xs: number[]) => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  requireBinary(CHROMIUM, 'install the Debian package chromium');
  const redis = await startRedis();
  const procs: Spawned[] = [];
  try {
    const router = spawnEntry('router/node.ts', { PORT: '0', HOST: '127.0.0.1', REDIS_URL: redis.url, AGENT_TOKEN: TOKEN, MAX_SESSIONS: '50', LOG_LEVEL: 'info' });
    procs.push(router);
    const routerUrl = JSON.parse(await router.waitForLine(/router listening/)).url as string;
    const agent = spawnEntry('agent/main.ts', { ROUTER_URL: routerUrl, AGENT_TOKEN: TOKEN, NODE_NAME: 'bench', METRICS_PORT: '0', CHROMIUM_PATH: CHROMIUM, LOG_LEVEL: 'warn' });
    procs.push(agent);
    await waitForAgent(routerUrl);

    const created = await fetch(`${routerUrl}/sessions?wait=true`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ timeout: 3600, idleTimeout: 3600 }),
    });
    const session = (await created.json()) as { id: string; status: string; cdpUrl: string; proxyUrl: string };
    if (session.status !== 'running') throw new Error(`session did not start: ${JSON.stringify(session)}`);
    // The same browser for all three paths: its real address is in the session record.
    const r = new Redis(redis.url);
    const stored = JSON.parse((await r.hget(`{bso}:s:${session.id}`, 'data')) ?? 'null');
    r.disconnect();
    const ep = stored.endpoints as { host: string; apiPort: number; browserWsPath: string };
    const direct = { http: `http://${ep.host}:${ep.apiPort}`, ws: `ws://${ep.host}:${ep.apiPort}${ep.browserWsPath}` };

    const proxyProc = spawnEntry('bench/single-hop-proxy.ts', {}, [direct.http]);
    procs.push(proxyProc);
    const proxyPort = JSON.parse(await proxyProc.waitForLine(/proxy listening/)).port as number;
    const viaProxy = { http: `http://127.0.0.1:${proxyPort}`, ws: `ws://127.0.0.1:${proxyPort}${ep.browserWsPath}` };

    // --- CDP round trip and throughput: rounds interleave the paths so drift hits all alike ---
    const paths = { direct: direct.ws, proxy: viaProxy.ws, tunnel: session.cdpUrl };
    const clients = Object.fromEntries(await Promise.all(Object.entries(paths).map(async ([name, url]) => [name, await cdpClient(url)] as const)));
    const rtRounds: Record<string, ReturnType<typeof stats>[]> = { direct: [], proxy: [], tunnel: [] };
    const tpRounds: Record<string, number[]> = { direct: [], proxy: [], tunnel: [] };
    for (const c of Object.values(clients)) {
      await cdpRoundTrips(c, 200);
      await cdpThroughput(c, 32, 300);
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, c] of Object.entries(clients)) {
        rtRounds[name]!.push(await cdpRoundTrips(c, ROUND_TRIPS));
        tpRounds[name]!.push(await cdpThroughput(c, 32, LOAD_MS));
      }
    }
    await Promise.all(Object.values(clients).map((c) => c.close()));
    const rt = Object.fromEntries(Object.entries(rtRounds).map(([k, v]) => [k, { p50: median(v.map((x) => x.p50)), p99: median(v.map((x) => x.p99)) }]));
    const tp = Object.fromEntries(Object.entries(tpRounds).map(([k, v]) => [k, median(v)]));
    const addedP50 = rt.tunnel!.p50 - rt.direct!.p50;
    rows.push({
      metric: `CDP Runtime.evaluate p50 (ms, median of ${ROUNDS})`,
      direct: f(rt.direct!.p50, 3),
      proxy: f(rt.proxy!.p50, 3),
      tunnel: f(rt.tunnel!.p50, 3),
      ratio: `+${f(addedP50, 3)} ms vs direct`,
      floor: '≤ +0.5 ms',
      ok: addedP50 <= 0.5,
    });
    rows.push({
      metric: 'CDP Runtime.evaluate p99 (ms)',
      direct: f(rt.direct!.p99, 3),
      proxy: f(rt.proxy!.p99, 3),
      tunnel: f(rt.tunnel!.p99, 3),
      ratio: `${f(rt.tunnel!.p99 / rt.direct!.p99)}× direct`,
      floor: '',
      ok: null,
    });
    const tpRatio = tp.tunnel! / tp.proxy!;
    const tpRange = range(tpRounds.tunnel!.map((t, i) => t / tpRounds.proxy![i]!));
    rows.push({
      metric: `CDP evaluate/s, 32 in flight (median of ${ROUNDS})`,
      direct: f(tp.direct!, 0),
      proxy: f(tp.proxy!, 0),
      tunnel: f(tp.tunnel!, 0),
      ratio: `${f(tpRatio)}× proxy (rounds ${tpRange})`,
      floor: '≥ 0.8× proxy',
      ok: tpRatio >= 0.8,
    });

    // --- HTTP /json/version ---
    const httpRounds: Record<string, number[]> = { direct: [], proxy: [], tunnel: [] };
    const httpBases = { direct: direct.http, proxy: viaProxy.http, tunnel: session.proxyUrl };
    for (const base of Object.values(httpBases)) await httpLoad(`${base}/json/version`, 16, 300);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, base] of Object.entries(httpBases)) {
        const res = await httpLoad(`${base}/json/version`, 16, LOAD_MS);
        if (res.errors) throw new Error(`${name}: ${res.errors} failed requests`);
        httpRounds[name]!.push(res.rps);
      }
    }
    const httpRps = Object.fromEntries(Object.entries(httpRounds).map(([k, v]) => [k, median(v)]));
    const httpRatio = httpRps.tunnel! / httpRps.proxy!;
    const httpRange = range(httpRounds.tunnel!.map((t, i) => t / httpRounds.proxy![i]!));
    rows.push({
      metric: `HTTP GET /json/version req/s, 16 conns (median of ${ROUNDS})`,
      direct: f(httpRps.direct!, 0),
      proxy: f(httpRps.proxy!, 0),
      tunnel: f(httpRps.tunnel!, 0),
      ratio: `${f(httpRatio)}× proxy (rounds ${httpRange})`,
      floor: '≥ 0.7× proxy',
      ok: httpRatio >= 0.7,
    });

    // --- status reads against Redis ---
    await httpLoad(`${routerUrl}/sessions/${session.id}/status`, 64, 500);
    const status = await httpLoad(`${routerUrl}/sessions/${session.id}/status`, 64, LOAD_MS);
    if (status.errors) throw new Error(`status: ${status.errors} failed requests`);
    rows.push({ metric: 'GET /sessions/:id/status req/s (Redis)', tunnel: f(status.rps, 0), ratio: '', floor: '≥ 8000', ok: status.rps >= 8000 });

    await fetch(`${routerUrl}/sessions/${session.id}`, { method: 'DELETE' });

    // --- the Workers router (miniflare/workerd, Durable Object hub, Upstash REST over the same Redis) ---
    const rest = await startUpstashRest(redis.url, 'bench-rest-token');
    const edge = await startEdgeRouter({
      bindings: { AGENT_TOKEN: TOKEN, UPSTASH_REDIS_REST_URL: rest.url, UPSTASH_REDIS_REST_TOKEN: 'bench-rest-token', MAX_SESSIONS: '50', LOG_LEVEL: 'error' },
    });
    try {
      const edgeAgent = spawnEntry('agent/main.ts', {
        ROUTER_URL: edge.url,
        AGENT_TOKEN: TOKEN,
        NODE_NAME: 'bench-edge',
        CLUSTER_ID: 'edge',
        METRICS_PORT: '0',
        CHROMIUM_PATH: CHROMIUM,
        LOG_LEVEL: 'warn',
      });
      procs.push(edgeAgent);
      await waitForAgent(edge.url);
      const es = (await (
        await fetch(`${edge.url}/sessions?wait=true`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ timeout: 3600, idleTimeout: 3600 }),
        })
      ).json()) as { id: string; status: string; cdpUrl: string };
      if (es.status !== 'running') throw new Error(`edge session did not start: ${JSON.stringify(es)}`);
      const ec = await cdpClient(es.cdpUrl);
      await cdpRoundTrips(ec, 200);
      await cdpThroughput(ec, 32, 300);
      const ert: number[] = [];
      const etp: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        ert.push((await cdpRoundTrips(ec, ROUND_TRIPS)).p50);
        etp.push(await cdpThroughput(ec, 32, LOAD_MS));
      }
      await ec.close();
      const edgeTp = median(etp);
      rows.push({ metric: `Workers router: CDP evaluate p50 (ms)`, tunnel: f(median(ert), 3), ratio: `Node router ${f(rt.tunnel!.p50, 3)}`, floor: '', ok: null });
      rows.push({
        metric: `Workers router: CDP evaluate/s, 32 in flight`,
        tunnel: f(edgeTp, 0),
        ratio: `${f(edgeTp / tp.tunnel!)}× Node router`,
        floor: '≥ 0.5× Node',
        ok: edgeTp >= 0.5 * tp.tunnel!,
      });
      await httpLoad(`${edge.url}/sessions/${es.id}/status`, 64, 300);
      const edgeStatus = await httpLoad(`${edge.url}/sessions/${es.id}/status`, 64, LOAD_MS);
      rows.push({
        metric: 'Workers router: GET /sessions/:id/status req/s',
        tunnel: f(edgeStatus.rps, 0),
        ratio: `${f(edgeStatus.rps / status.rps)}× Node router`,
        floor: '',
        ok: null,
      });
      await fetch(`${edge.url}/sessions/${es.id}`, { method: 'DELETE' });
    } finally {
      await edge.close();
      await rest.close();
    }

    // --- create-to-ready vs a bare launch, interleaved so drift hits both alike ---
    const bare: number[] = [];
    const viaApi: number[] = [];
    for (let i = 0; i < STARTS; i++) {
      let t = performance.now();
      const c = await launchChromium({ executablePath: CHROMIUM, noSandbox, timeoutMs: 30_000 });
      bare.push(performance.now() - t);
      await killChromium(c);
      t = performance.now();
      const res = await fetch(`${routerUrl}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      const s = (await res.json()) as { id: string; status: string };
      if (s.status !== 'running') throw new Error(`session ${s.id} is ${s.status}`);
      viaApi.push(performance.now() - t);
      await fetch(`${routerUrl}/sessions/${s.id}`, { method: 'DELETE' });
    }
    const b = stats(bare);
    const a = stats(viaApi);
    rows.push({ metric: `bare launch → CDP ready p50/p99 (ms, n=${STARTS})`, direct: `${f(b.p50, 0)}/${f(b.p99, 0)}`, tunnel: '', ratio: '', floor: '', ok: null });
    rows.push({
      metric: `create → running p50/p99 (ms, n=${STARTS})`,
      tunnel: `${f(a.p50, 0)}/${f(a.p99, 0)}`,
      ratio: `${f(a.p50 / b.p50)}× bare (p50)`,
      floor: '≤ 1.2× bare',
      ok: a.p50 <= 1.2 * b.p50,
    });
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await redis.stop();
  }
  print();
  const leftovers = await pidsMatching('bso-chromium-');
  if (leftovers.length) console.error(`warning: chromium processes left behind: ${leftovers.join(' ')}`);
  process.exitCode = rows.some((r) => r.ok === false) ? 1 : 0;
}

async function waitForAgent(url: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const h = (await (await fetch(`${url}/health`)).json()) as { agents: unknown[] };
    if (h.agents.length) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('agent did not connect');
}

function print(): void {
  const head = ['metric', 'direct', 'single-hop proxy', 'router+tunnel+agent', 'ratio', 'floor', 'result'];
  const body = rows.map((r) => [r.metric, r.direct ?? '', r.proxy ?? '', r.tunnel, r.ratio, r.floor, r.ok === null ? '' : r.ok ? 'PASS' : 'FAIL']);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  console.log(line(head));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const row of body) console.log(line(row));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
