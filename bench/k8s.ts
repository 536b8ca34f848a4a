/**
 * `npm run bench:k8s`: create-to-running latency through router, agent and the test cluster (real
 * apiserver, controllers and scheduler; process kubelet), beside the local runtime, in one run. Also
 * times the control plane's start with a warm binary cache.
 */
import { loadAgentConfig } from '../agent/config.js';
import { startAgent } from '../agent/main.js';
import { NAMESPACE, startTestCluster } from '../harness/cluster.js';
import { startSystem, TEST_TOKEN } from '../harness/system.js';
import { stats } from './load.js';

const N = Number(process.argv.find((a) => a.startsWith('--n='))?.slice(4) ?? 20);

async function createToRunning(url: string, cluster: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    const res = await fetch(`${url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ cluster }) });
    const s = (await res.json()) as { id: string; status: string; failureReason?: string };
    if (s.status !== 'running') throw new Error(`${cluster}: session ${s.id} is ${s.status} ${s.failureReason ?? ''}`);
    out.push(performance.now() - t);
    await fetch(`${url}/sessions/${s.id}`, { method: 'DELETE' });
  }
  return out;
}

const t0 = performance.now();
const cluster = await startTestCluster();
const clusterStartMs = performance.now() - t0;
const sys = await startSystem({ agents: 0, routerEnv: { MAX_SESSIONS: '50' } });
try {
  await sys.addAgent({ CLUSTER_ID: 'local', NODE_NAME: 'local-node' });
  sys.agents.push(
    await startAgent(
      loadAgentConfig(
        {
          ROUTER_URL: sys.url,
          AGENT_TOKEN: TEST_TOKEN,
          CLUSTER_ID: 'kube',
          NODE_NAME: cluster.node,
          AGENT_RUNTIME: 'kubernetes',
          KUBECONFIG: cluster.agentKubeconfig,
          K8S_NAMESPACE: NAMESPACE,
          BROWSER_API_IMAGE: cluster.images.api,
          BROWSER_UI_IMAGE: cluster.images.ui,
          POD_CPU_REQUEST: '100m',
          POD_MEMORY_REQUEST: '64Mi',
          METRICS_PORT: '0',
          LOG_LEVEL: 'silent',
        },
        false,
      ),
    ),
  );
  await new Promise((r) => setTimeout(r, 500));
  await createToRunning(sys.url, 'kube'); // warm-up pass is not reported separately; it is the same run twice
  const kube = stats(await createToRunning(sys.url, 'kube'));
  const local = stats(await createToRunning(sys.url, 'local'));
  const row = (name: string, s: ReturnType<typeof stats>) =>
    `| ${name.padEnd(34)} | ${s.p50.toFixed(0).padStart(6)} | ${s.p99.toFixed(0).padStart(6)} | ${String(s.n).padStart(3)} |`;
  console.log(`control plane start (warm binary cache, incl. node registration and RBAC): ${clusterStartMs.toFixed(0)} ms`);
  console.log('| create → running (ms)              |    p50 |    p99 |   n |');
  console.log('|------------------------------------|--------|--------|-----|');
  console.log(row('local runtime (Chromium process)', local));
  console.log(row('kubernetes runtime (Job → pod)', kube));
} finally {
  await sys.close();
  await cluster.stop();
}
