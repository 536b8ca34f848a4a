/**
 * `npm run bench:k8s`: create-to-running latency through router, agent and the test cluster (real
 * apiserver, controllers and scheduler; process kubelets), beside the local runtime, in one run; then
 * thirty creates at once on three nodes (an agent on each) against Kubernetes' own pod-startup SLO
 * (p99 ≤ 5 s); then the steel profile (the real steel API as the browser image: ten creates, and CDP
 * throughput through the router against straight to steel). Also times the control plane's start with a
 * warm binary cache. Then the real node: the images rebuilt (warm root filesystem cache) and the node's
 * binaries checked (warm), infra/k8s installed with kubectl, and twenty sessions as real pods
 * (containerd, runc, the browser image already in the store) through the router Service.
 */
import { loadAgentConfig } from '../agent/config.js';
import { startAgent } from '../agent/main.js';
import { kubeAgentEnv, NAMESPACE, startTestCluster, STEEL_IMAGES, steelPeer, steelRecipes } from '../harness/cluster.js';
import { browserUserOfThisProcess, killChromium, launchChromium } from '../agent/runtime/chromium.js';
import { CHROMIUM } from '../harness/processes.js';
import { startSystem, TEST_TOKEN } from '../harness/system.js';
import { cdpClient, cdpThroughput, stats } from './load.js';
import type { KubernetesRuntime } from '../agent/runtime/kubernetes/runtime.js';
import { join } from 'node:path';
import { buildImages } from '../infra/images/build.js';
import { ensureBinaries } from '../infra/test-cluster/control-plane.js';
import { startRealNode } from '../infra/test-cluster/real-node.js';
import { installOnRealNode } from '../harness/install.js';

const repo = join(import.meta.dirname, '..');

/** Twenty sessions one after another as real pods, created through the router Service with `?wait=true`. */
async function realNodeRow(n: number): Promise<{ created: ReturnType<typeof stats>; startMs: number; imagesWarmS: number; nodeBinariesWarmS: number }> {
  const t = performance.now();
  const nodeBin = ensureBinaries({ script: 'node.sh' });
  const nodeBinariesWarmS = (performance.now() - t) / 1000;
  const images = await buildImages();
  const started = performance.now();
  const node = await startRealNode({ binaries: { node: nodeBin, controlPlane: ensureBinaries() }, layout: images.layout, timeoutMs: 300_000 });
  try {
    const startMs = performance.now() - started;
    // Small requests, so a 2-core node's room is never what a create waits for.
    const installed = await installOnRealNode(node, {
      repo,
      version: images.version,
      clusterId: 'real',
      agentConfig: { POD_CPU_REQUEST: '10m', UI_CPU_REQUEST: '10m', POD_MEMORY_REQUEST: '64Mi', UI_MEMORY_REQUEST: '16Mi' },
    });
    try {
      const headers = { authorization: `Bearer ${installed.secrets.adminKey}`, 'content-type': 'application/json' };
      const once = async () => {
        const t0 = performance.now();
        const res = await fetch(`${installed.base}/sessions?wait=true&waitTimeout=120`, { method: 'POST', headers, body: '{}' });
        const s = (await res.json()) as { id: string; status: string };
        if (s.status !== 'running') throw new Error(`real node: ${res.status} ${JSON.stringify(s)}`);
        const ms = performance.now() - t0;
        await fetch(`${installed.base}/sessions/${s.id}`, { method: 'DELETE', headers });
        return ms;
      };
      await once(); // uncounted: the first pod of an image also sets up its snapshot
      const samples: number[] = [];
      for (let i = 0; i < n; i++) samples.push(await once());
      return { created: stats(samples), startMs, imagesWarmS: images.seconds.total, nodeBinariesWarmS };
    } finally {
      await installed.close();
    }
  } finally {
    await node.stop();
  }
}

const N = Number(process.argv.find((a) => a.startsWith('--n='))?.slice(4) ?? 20);

async function createToRunning(url: string, cluster: string, n = N, before?: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    await before?.();
    const t = performance.now();
    const res = await sys.fetch(`${url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ cluster }) });
    const s = (await res.json()) as { id: string; status: string; failureReason?: string };
    if (s.status !== 'running') throw new Error(`${cluster}: ${res.status} ${JSON.stringify(s)}`);
    out.push(performance.now() - t);
    await sys.fetch(`${url}/sessions/${s.id}`, { method: 'DELETE' });
  }
  return out;
}

const found = steelPeer();
if ('absent' in found) console.log(`steel rows not run: ${found.absent}`);
const t0 = performance.now();
const cluster = await startTestCluster({ nodes: 3, images: 'peer' in found ? steelRecipes(found.peer) : {} });
const clusterStartMs = performance.now() - t0;
const sys = await startSystem({ agents: 0, routerEnv: { MAX_SESSIONS: '50' } });
try {
  await sys.addAgent({ CLUSTER_ID: 'local', NODE_NAME: 'local-node' });
  const kubeAgent = (clusterId: string, node: string, extra: Record<string, string> = {}) =>
    startAgent(loadAgentConfig(kubeAgentEnv(cluster, sys.url, TEST_TOKEN, clusterId, { NODE_NAME: node, START_TIMEOUT_MS: '120000', LOG_LEVEL: 'silent', ...extra }), false));
  sys.agents.push(await kubeAgent('kube', cluster.node));
  await new Promise((r) => setTimeout(r, 500));
  await createToRunning(sys.url, 'kube'); // warm-up pass is not reported separately; it is the same run twice
  const kube = stats(await createToRunning(sys.url, 'kube'));
  const local = stats(await createToRunning(sys.url, 'local'));
  // The same runtime with a warm pool of 4 on the same node: each create once the pool is full again.
  const WARM_POOL = 4;
  const warmAgent = await kubeAgent('kube-warm', cluster.node, { WARM_POOL_SIZE: String(WARM_POOL), WARM_POOL_MIN_SIZE: String(WARM_POOL) });
  sys.agents.push(warmAgent);
  const poolFull = async () => {
    const deadline = performance.now() + 120_000;
    while ((warmAgent.runtime as KubernetesRuntime).warmPool()!.idle < WARM_POOL) {
      if (performance.now() > deadline) throw new Error('the warm pool did not fill within 120 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kubeWarm = stats(await createToRunning(sys.url, 'kube-warm', N, poolFull));
  await warmAgent.close();
  // The steel profile on the same cluster, with the specification's images: ten sessions one after another,
  // then CDP through the router to steel (which proxies CDP itself) against straight to steel's port.
  let steel: { created: ReturnType<typeof stats>; viaRouter: number; direct: number } | null = null;
  if ('peer' in found) {
    sys.agents.push(
      await kubeAgent('steel', cluster.node, { BROWSER_API_IMAGE: STEEL_IMAGES.api, BROWSER_UI_IMAGE: STEEL_IMAGES.ui, BROWSER_API_PORT: '3000', BROWSER_UI_PORT: '5173' }),
    );
    await new Promise((r) => setTimeout(r, 500));
    const created = stats(await createToRunning(sys.url, 'steel', 10));
    const res = await sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ cluster: 'steel' }) });
    const s = (await res.json()) as { id: string; status: string; cdpUrl: string };
    if (s.status !== 'running') throw new Error(`steel: ${res.status} ${JSON.stringify(s)}`);
    const pod = (await cluster.admin.call('GET', `/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=bso.dev%2Fsession-id%3D${s.id}`)).items[0];
    const clients = { viaRouter: await cdpClient(s.cdpUrl), direct: await cdpClient(`ws://${pod.status.podIP}:3000/`) };
    const rounds: Record<'viaRouter' | 'direct', number[]> = { viaRouter: [], direct: [] };
    for (const c of Object.values(clients)) await cdpThroughput(c, 32, 300);
    for (let round = 0; round < 3; round++) for (const name of ['viaRouter', 'direct'] as const) rounds[name].push(await cdpThroughput(clients[name], 32, 2000));
    for (const c of Object.values(clients)) await c.close();
    await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    steel = { created, viaRouter: stats(rounds.viaRouter).p50, direct: stats(rounds.direct).p50 };
  }
  // Thirty at once, spread by the router over three nodes' agents.
  for (const node of cluster.nodes) sys.agents.push(await kubeAgent('spread', node));
  await new Promise((r) => setTimeout(r, 500));
  const burst = await Promise.all(
    Array.from({ length: 30 }, async () => {
      const t = performance.now();
      const res = await sys.fetch(`${sys.url}/sessions?wait=true&waitTimeout=120`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ cluster: 'spread' }),
      });
      const s = (await res.json()) as { id: string; status: string; node: string; failureReason?: string };
      if (s.status !== 'running') throw new Error(`spread: ${res.status} ${JSON.stringify(s)}`);
      return { ms: performance.now() - t, id: s.id, node: s.node };
    }),
  );
  await Promise.all(burst.map((b) => sys.fetch(`${sys.url}/sessions/${b.id}`, { method: 'DELETE' })));
  const spread = stats(burst.map((b) => b.ms));
  // This machine's own floor for that burst: thirty Chromiums launched at once, as the test kubelets
  // launch them (unprivileged, sandboxed, CDP on a port), with nothing else in the way.
  const user = await browserUserOfThisProcess();
  const bare = await Promise.all(
    Array.from({ length: 30 }, async () => {
      const t = performance.now();
      const browser = await launchChromium({ executablePath: CHROMIUM, noSandbox: false, devtools: 'port', user, timeoutMs: 120_000 });
      return { browser, ms: performance.now() - t };
    }),
  );
  await Promise.all(bare.map((b) => killChromium(b.browser)));
  const bareBurst = stats(bare.map((b) => b.ms));
  const perNode = cluster.nodes.map((n) => `${n}: ${burst.filter((b) => b.node === n).length}`).join(', ');
  const row = (name: string, s: ReturnType<typeof stats>) =>
    `| ${name.padEnd(34)} | ${s.p50.toFixed(0).padStart(6)} | ${s.p99.toFixed(0).padStart(6)} | ${String(s.n).padStart(3)} |`;
  console.log(`control plane start (warm binary cache, incl. node registration and RBAC): ${clusterStartMs.toFixed(0)} ms`);
  console.log('| create → running (ms)              |    p50 |    p99 |   n |');
  console.log('|------------------------------------|--------|--------|-----|');
  console.log(row('local runtime (Chromium process)', local));
  console.log(row('kubernetes runtime (Job → pod)', kube));
  console.log(row(`kubernetes runtime, warm pool of ${WARM_POOL}`, kubeWarm));
  if (steel) console.log(row('steel profile (Job → steel API)', steel.created));
  console.log(row('30 bare Chromium launches at once', bareBurst));
  console.log(row('30 at once on 3 nodes', spread));
  console.log(
    `30 at once: ${perNode}; ${(spread.p50 / bareBurst.p50).toFixed(2)}× the bare burst (p50); Kubernetes' pod-startup SLO (p99 ≤ 5000 ms): ${spread.p99 <= 5000 ? 'met' : 'not met'}`,
  );
  console.log(`kubernetes warm create → running p50 ${kubeWarm.p50.toFixed(1)} ms: floor ≤ 50 ms ${kubeWarm.p50 <= 50 ? 'met' : 'NOT met'}`);
  if (steel) {
    console.log(
      `steel: CDP Runtime.evaluate, 32 in flight, median of 3 × 2 s: ${steel.viaRouter.toFixed(0)}/s through the router, ${steel.direct.toFixed(0)}/s straight to steel's port (${(steel.viaRouter / steel.direct).toFixed(2)}×)`,
    );
  }
} finally {
  await sys.close();
  await cluster.stop();
}

// After the process-kubelet cluster is gone, so the two never share the machine's two cores.
const real = await realNodeRow(N);
console.log(
  `real node (kubelet + containerd + runc, kube-proxy, CoreDNS; infra/k8s applied): start ${(real.startMs / 1000).toFixed(1)} s (control plane, containerd, image import, kubelet Ready)`,
);
console.log(
  `| real pods, one at a time (Job → pod)  | ${real.created.p50.toFixed(0).padStart(6)} | ${real.created.p99.toFixed(0).padStart(6)} | ${String(real.created.n).padStart(3)} |  pod-startup SLO (p99 ≤ 5000 ms): ${real.created.p99 <= 5000 ? 'met' : 'not met'}`,
);
console.log(`warm builds: images ${real.imagesWarmS.toFixed(0)} s (root filesystems cached; app layer rebuilt), node binaries ${real.nodeBinariesWarmS.toFixed(1)} s (cached)`);
