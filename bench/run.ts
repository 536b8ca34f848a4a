/**
 * `npm run bench`: measures the tunnel against Chromium directly and against a single-hop proxy
 * (http-proxy-3, what steel-browser and browserless use), create-to-ready against a bare Chromium
 * launch, status reads against Redis, and the warm pool (bench/warm.ts); prints one table with ratios and
 * the issues' floors.
 */
import { browserUserOfThisProcess, killChromium, launchChromium, type LaunchOptions } from '../agent/runtime/chromium.js';
import { CHROMIUM, pidsMatching, requireBinary, startRedis } from '../harness/processes.js';
import { spawnEntry, type Spawned } from '../harness/spawn.js';
import { startEdgeRouter } from '../harness/edge.js';
import { startUpstashRest } from '../harness/upstash-rest.js';
import { startKernelBalancer } from './kernel-balancer.js';
import { benchWarmPool, WARM_POOL } from './warm.js';
import { benchDensity } from './density.js';
import { cdpClient, cdpRoundTrips, cdpThroughput, httpLoad, stats } from './load.js';

const TOKEN = 'bench-token-0123456789abcdef';
const BENCH_KEY = 'bench-key-0123456789abcdefghijklmnop';
const AUTH = { authorization: `Bearer ${BENCH_KEY}` };
/** The measured router runs as users deploy it: keys, signed connect URLs, rate limits in Redis (set
 * high enough never to refuse, so their cost is measured, not their refusals). */
const KEYED_ENV = {
  API_KEYS: `bench:${BENCH_KEY}`,
  SESSION_TOKEN_SECRET: 'bench-session-token-secret-0123456789abcdef',
  RATE_LIMIT_API: '100000000/min',
  RATE_LIMIT_CREATE: '100000000/min',
};
const authed = (init: RequestInit = {}): RequestInit => ({ ...init, headers: { ...AUTH, ...(init.headers as Record<string, string>) } });
const quick = process.argv.includes('--quick');
const ROUND_TRIPS = quick ? 300 : 1000;
const LOAD_MS = quick ? 1000 : 2000;
const ROUNDS = quick ? 3 : 5;
const STARTS = quick ? 5 : 20;

type Row = { metric: string; direct?: string; proxy?: string; tunnel: string; ratio: string; floor: string; ok: boolean | null };
const rows: Row[] = [];
const f = (n: number, d = 2) => n.toFixed(d);
const range = (xs: number[]) => `${f(Math.min(...xs))}–${f(Math.max(...xs))}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  requireBinary(CHROMIUM, 'install the Debian package chromium');
  const redis = await startRedis();
  const procs: Spawned[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  // Launched as the agent launches them: an unprivileged user (when root), Chromium's sandbox on, over its pipe.
  const bareLaunch: LaunchOptions = {
    executablePath: CHROMIUM,
    noSandbox: false,
    devtools: 'pipe',
    user: await browserUserOfThisProcess(),
    timeoutMs: 30_000,
  };
  try {
    const common = { PORT: '0', HOST: '127.0.0.1', REDIS_URL: redis.url, AGENT_TOKEN: TOKEN, MAX_SESSIONS: '50', LOG_LEVEL: 'info' };
    const router = spawnEntry('router/node.ts', { ...common, ...KEYED_ENV });
    procs.push(router);
    const routerUrl = JSON.parse(await router.waitForLine(/router listening/)).url as string;
    const agent = spawnEntry('agent/main.ts', { ROUTER_URL: routerUrl, AGENT_TOKEN: TOKEN, NODE_NAME: 'bench', METRICS_PORT: '0', CHROMIUM_PATH: CHROMIUM, LOG_LEVEL: 'warn' });
    procs.push(agent);
    await waitForAgent(routerUrl, AUTH);
    // The same router as three replicas (a key prefix of their own, so they do not count the one above)
    // behind a round-robin TCP balancer in its own process; their agent dials the balancer and holds a
    // tunnel to each replica, and clients reach its session through the balancer.
    const replicated = { ...common, ...KEYED_ENV, REDIS_KEY_PREFIX: '{bso-replicas}:' };
    const replicaPorts: number[] = [];
    for (const id of ['bench-a', 'bench-b', 'bench-c']) {
      const replica = spawnEntry('router/node.ts', { ...replicated, REPLICA_ID: id });
      procs.push(replica);
      replicaPorts.push(Number(new URL(JSON.parse(await replica.waitForLine(/router listening/)).url as string).port));
    }
    // In the kernel (nftables DNAT, as kube-proxy balances a Service) when root; else a relay process.
    const kernelBalancer = await startKernelBalancer(replicaPorts);
    let balancerUrl: string;
    if (kernelBalancer) {
      cleanups.push(() => kernelBalancer.close());
      balancerUrl = `http://127.0.0.1:${kernelBalancer.port}`;
    } else {
      const balancerProc = spawnEntry('bench/balancer.ts', {}, replicaPorts.map(String));
      procs.push(balancerProc);
      balancerUrl = `http://127.0.0.1:${JSON.parse(await balancerProc.waitForLine(/balancer listening/)).port as number}`;
    }
    const balancerKind = kernelBalancer ? 'nftables balancer' : 'relay balancer';
    const replicatedAgent = spawnEntry('agent/main.ts', {
      ROUTER_URL: balancerUrl,
      AGENT_TOKEN: TOKEN,
      NODE_NAME: 'bench-replicated',
      METRICS_PORT: '0',
      CHROMIUM_PATH: CHROMIUM,
      LOG_LEVEL: 'warn',
    });
    procs.push(replicatedAgent);
    for (const port of replicaPorts) await waitForAgent(`http://127.0.0.1:${port}`, AUTH);
    // The same router with no key (loopback only), on the same Redis, for the cost of access control.
    const openRouter = spawnEntry('router/node.ts', common);
    procs.push(openRouter);
    const openUrl = JSON.parse(await openRouter.waitForLine(/router listening/)).url as string;
    const openAgent = spawnEntry('agent/main.ts', {
      ROUTER_URL: openUrl,
      AGENT_TOKEN: TOKEN,
      NODE_NAME: 'bench-open',
      METRICS_PORT: '0',
      CHROMIUM_PATH: CHROMIUM,
      LOG_LEVEL: 'warn',
    });
    procs.push(openAgent);
    await waitForAgent(openUrl);

    const session = await createRunning(routerUrl);
    // The URLs alone open the session (the token rides in them); the bench's CDP and HTTP rows use them as a client would.
    if (!/\/proxy\/~[^/]+\/devtools\/browser$/.test(session.cdpUrl)) throw new Error(`cdpUrl carries no session token: ${session.cdpUrl}`);
    // The session's browser speaks only over its pipe to the agent. "Direct" is the same Chromium,
    // launched the same way (unprivileged user, sandbox on), with a plain DevTools port instead.
    const plain = await launchChromium({ ...bareLaunch, devtools: 'port' });
    cleanups.push(() => killChromium(plain));
    const ep = { host: '127.0.0.1', apiPort: plain.port!, browserWsPath: plain.browserWsPath! };
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
    // A session of the replicated routers, through the balancer: reconnected every round, so rounds land
    // on each replica; each round is paired with one on the single router's session, so drift hits both.
    // The replica that answered built the URL from its own address: the client goes through the balancer.
    const replicatedCdpUrl = Object.assign(new URL((await createRunning(balancerUrl)).cdpUrl), { port: new URL(balancerUrl).port }).toString();
    for (let round = 0; round < ROUNDS; round++) {
      const c = await cdpClient(replicatedCdpUrl);
      await cdpRoundTrips(c, 100);
      rtRounds.balanced = [...(rtRounds.balanced ?? []), await cdpRoundTrips(c, ROUND_TRIPS)];
      tpRounds.balanced = [...(tpRounds.balanced ?? []), await cdpThroughput(c, 32, LOAD_MS)];
      rtRounds.oneReplica = [...(rtRounds.oneReplica ?? []), await cdpRoundTrips(clients.tunnel!, ROUND_TRIPS)];
      tpRounds.oneReplica = [...(tpRounds.oneReplica ?? []), await cdpThroughput(clients.tunnel!, 32, LOAD_MS)];
      await c.close();
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
      metric: `CDP evaluate/s, 32 in flight, token cdpUrl (median of ${ROUNDS})`,
      direct: f(tp.direct!, 0),
      proxy: f(tp.proxy!, 0),
      tunnel: f(tp.tunnel!, 0),
      ratio: `${f(tpRatio)}× proxy (rounds ${tpRange})`,
      floor: '≥ 0.8× proxy',
      ok: tpRatio >= 0.8,
    });

    const balancedP50 = rt.balanced!.p50 - rt.oneReplica!.p50;
    rows.push({
      metric: `CDP evaluate p50, ${balancerKind} + 3 replicas (ms, median of ${ROUNDS})`,
      tunnel: f(rt.balanced!.p50, 3),
      ratio: `+${f(balancedP50, 3)} ms vs one router (${f(rt.oneReplica!.p50, 3)})`,
      floor: '≤ +0.5 ms',
      ok: balancedP50 <= 0.5,
    });
    const balancedTp = tp.balanced! / tp.oneReplica!;
    rows.push({
      metric: `CDP evaluate/s, 32 in flight, ${balancerKind} + 3 replicas (median of ${ROUNDS})`,
      tunnel: f(tp.balanced!, 0),
      ratio: `${f(balancedTp)}× one router (${f(tp.oneReplica!, 0)}; rounds ${range(tpRounds.balanced!.map((t, i) => t / tpRounds.oneReplica![i]!))})`,
      floor: '≥ 0.8× one router',
      ok: balancedTp >= 0.8,
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

    // --- status reads against Redis: with a key (checked, charged to its API bucket in Redis) and without,
    // each router reading a running session of its own agent (the status includes the agent's view) ---
    const openSession = (await (
      await fetch(`${openUrl}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ timeout: 3600, idleTimeout: 3600 }) })
    ).json()) as { id: string; status: string };
    if (openSession.status !== 'running') throw new Error(`session did not start: ${JSON.stringify(openSession)}`);
    const statusPaths = { auth: `/sessions/${session.id}/status`, open: `/sessions/${openSession.id}/status` };
    await httpLoad(`${routerUrl}${statusPaths.auth}`, 64, 500, AUTH);
    await httpLoad(`${openUrl}${statusPaths.open}`, 64, 500);
    const statusRounds: { auth: number[]; open: number[] } = { auth: [], open: [] };
    /** The router as deployed and the same router without keys, with the headers each needs. */
    const routerPair = [
      ['auth', routerUrl, AUTH],
      ['open', openUrl, {}],
    ] as const;
    for (let round = 0; round < ROUNDS; round++) {
      // ABBA: whichever goes second in a round has the warmer machine; alternate it.
      for (const [name, url, headers] of round % 2 ? [...routerPair].reverse() : routerPair) {
        const res = await httpLoad(`${url}${statusPaths[name]}`, 64, LOAD_MS, headers);
        if (res.errors) throw new Error(`status (${name}): ${res.errors} failed requests`);
        statusRounds[name].push(res.rps);
      }
    }
    const status = { rps: median(statusRounds.auth) };
    const statusOpen = median(statusRounds.open);
    const statusRatio = status.rps / statusOpen;
    rows.push({ metric: 'GET /sessions/:id/status req/s, no auth (Redis)', tunnel: f(statusOpen, 0), ratio: '', floor: '', ok: null });
    rows.push({
      metric: 'GET /sessions/:id/status req/s, API key + API rate limit (Redis)',
      tunnel: f(status.rps, 0),
      ratio: `${f(statusRatio)}× no auth (rounds ${range(statusRounds.auth.map((a, i) => a / statusRounds.open[i]!))})`,
      floor: '≥ 0.9× no auth, ≥ 8000',
      ok: statusRatio >= 0.9 && status.rps >= 8000,
    });

    await fetch(`${routerUrl}/sessions/${session.id}`, authed({ method: 'DELETE' }));
    await fetch(`${openUrl}/sessions/${openSession.id}`, { method: 'DELETE' });

    // --- the API cost of a create (answered before the browser starts): key, both rate limits, quota script vs none ---
    const createCost = { auth: [] as number[], open: [] as number[] };
    for (let i = 0; i < STARTS * 2; i++) {
      for (const [name, url, headers] of routerPair) {
        const t = performance.now();
        const res = await fetch(`${url}/sessions`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: '{}' });
        const took = performance.now() - t;
        const s = (await res.json()) as { id: string };
        if (res.status !== 201) throw new Error(`create (${name}) answered ${res.status}`);
        if (i >= 2) createCost[name].push(took);
        await fetch(`${url}/sessions/${s.id}`, { method: 'DELETE', headers });
      }
    }
    const costAuth = stats(createCost.auth).p50;
    const costOpen = stats(createCost.open).p50;
    rows.push({
      metric: `POST /sessions answer p50 (ms, n=${createCost.auth.length}): key + limits vs none`,
      direct: f(costOpen, 2),
      tunnel: f(costAuth, 2),
      ratio: `+${f(costAuth - costOpen, 2)} ms`,
      floor: '≤ +1 ms',
      ok: costAuth - costOpen <= 1,
    });

    // --- the Workers router (miniflare/workerd, Durable Object hub, Upstash REST over the same Redis) ---
    const rest = await startUpstashRest(redis.url, 'bench-rest-token');
    const edge = await startEdgeRouter({
      bindings: { AGENT_TOKEN: TOKEN, ...KEYED_ENV, UPSTASH_REDIS_REST_URL: rest.url, UPSTASH_REDIS_REST_TOKEN: 'bench-rest-token', MAX_SESSIONS: '50', LOG_LEVEL: 'error' },
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
      await waitForAgent(edge.url, AUTH);
      const es = (await (
        await fetch(
          `${edge.url}/sessions?wait=true`,
          authed({
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ timeout: 3600, idleTimeout: 3600 }),
          }),
        )
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
      await httpLoad(`${edge.url}/sessions/${es.id}/status`, 64, 300, AUTH);
      const edgeStatus = await httpLoad(`${edge.url}/sessions/${es.id}/status`, 64, LOAD_MS, AUTH);
      rows.push({
        metric: 'Workers router: GET /sessions/:id/status req/s',
        tunnel: f(edgeStatus.rps, 0),
        ratio: `${f(edgeStatus.rps / status.rps)}× Node router`,
        floor: '',
        ok: null,
      });
      await fetch(`${edge.url}/sessions/${es.id}`, authed({ method: 'DELETE' }));
    } finally {
      await edge.close();
      await rest.close();
    }

    // --- create-to-ready vs a bare launch, interleaved so drift hits both alike ---
    const bare: number[] = [];
    const viaApi: number[] = [];
    for (let i = 0; i < STARTS; i++) {
      let t = performance.now();
      const c = await launchChromium(bareLaunch);
      bare.push(performance.now() - t);
      await killChromium(c);
      t = performance.now();
      const res = await fetch(`${routerUrl}/sessions?wait=true`, authed({ method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
      const s = (await res.json()) as { id: string; status: string };
      if (s.status !== 'running') throw new Error(`session ${s.id} is ${s.status}`);
      viaApi.push(performance.now() - t);
      await fetch(`${routerUrl}/sessions/${s.id}`, authed({ method: 'DELETE' }));
    }
    const b = stats(bare);
    const a = stats(viaApi);
    rows.push({ metric: `bare sandboxed launch → CDP ready p50/p99 (ms, n=${STARTS})`, direct: `${f(b.p50, 0)}/${f(b.p99, 0)}`, tunnel: '', ratio: '', floor: '', ok: null });
    rows.push({
      metric: `create → running p50/p99 (ms, n=${STARTS})`,
      tunnel: `${f(a.p50, 0)}/${f(a.p99, 0)}`,
      ratio: `${f(a.p50 / b.p50)}× bare (p50)`,
      floor: '≤ 1.2× bare',
      ok: a.p50 <= 1.2 * b.p50,
    });

    // --- the warm pool: its own router and agent on the same Redis ---
    const warm = await benchWarmPool({
      redisUrl: redis.url,
      routerEnv: { ...common, ...KEYED_ENV },
      token: TOKEN,
      auth: AUTH,
      creates: quick ? 20 : 50,
      cycles: quick ? 10 : 20,
      handOffs: quick ? 10 : 20,
    });
    const w = warm.createToRunning;
    rows.push({
      metric: `warm pool of ${WARM_POOL}: create → running p50/p99 (ms, n=${w.n}, ${warm.hits}/${warm.claims} claims hit)`,
      tunnel: `${f(w.p50, 1)}/${f(w.p99, 1)}`,
      ratio: `cold ${f(a.p50, 0)}/${f(a.p99, 0)}`,
      floor: '≤ 10/40 ms',
      ok: w.p50 <= 10 && w.p99 <= 40,
    });
    rows.push({
      metric: `warm pool: create → Playwright connect → navigate → delete, median of ${quick ? 10 : 20} (ms)`,
      tunnel: f(warm.cycleMedianMs, 0),
      ratio: '',
      floor: '≤ 500 ms',
      ok: warm.cycleMedianMs <= 500,
    });
    rows.push({
      metric: `queue hand-off: slot freed → head waiter's session running, warm, p50/p99 (ms, n=${warm.handOff.n})`,
      tunnel: `${f(warm.handOff.p50, 1)}/${f(warm.handOff.p99, 1)}`,
      ratio: '',
      floor: '≤ 50 ms (p50)',
      ok: warm.handOff.p50 <= 50,
    });

    // --- density: cold starts beside idle sessions ---
    const density = await benchDensity({ redisUrl: redis.url, routerEnv: { ...common, ...KEYED_ENV }, token: TOKEN, auth: AUTH, creates: quick ? 3 : 7 });
    const empty = density.byIdle[0]!.createToRunning;
    for (const { idle, createToRunning: d } of density.byIdle) {
      const most = idle === density.byIdle.at(-1)!.idle;
      rows.push({
        metric: `density: cold create → running with ${idle} idle sessions p50/p99 (ms, n=${d.n})${most ? `; ${f(density.pssMbPerIdleSession, 0)} MB PSS per idle session` : ''}`,
        tunnel: `${f(d.p50, 0)}/${f(d.p99, 0)}`,
        ratio: idle ? `${f(d.p50 / empty.p50)}× empty node` : '',
        floor: most ? '≤ 1.2× empty node' : '',
        ok: most ? d.p50 <= 1.2 * empty.p50 : null,
      });
    }
  } finally {
    await Promise.all(cleanups.map((c) => c()));
    await Promise.all(procs.map((p) => p.stop()));
    await redis.stop();
  }
  print();
  const leftovers = await pidsMatching('bso-chromium-');
  if (leftovers.length) console.error(`warning: chromium processes left behind: ${leftovers.join(' ')}`);
  process.exitCode = rows.some((r) => r.ok === false) ? 1 : 0;
}

/** A session that lives through the whole bench, running. */
async function createRunning(baseUrl: string): Promise<{ id: string; status: string; cdpUrl: string; proxyUrl: string }> {
  const created = await fetch(
    `${baseUrl}/sessions?wait=true`,
    authed({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ timeout: 3600, idleTimeout: 3600 }) }),
  );
  const session = (await created.json()) as { id: string; status: string; cdpUrl: string; proxyUrl: string };
  if (session.status !== 'running') throw new Error(`session did not start: ${JSON.stringify(session)}`);
  return session;
}

async function waitForAgent(url: string, headers: Record<string, string> = {}): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const h = (await (await fetch(`${url}/health`, { headers })).json()) as { agents: unknown[] };
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
