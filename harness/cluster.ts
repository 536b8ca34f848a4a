import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { ensureBinaries, startControlPlane, stopControlPlane, type ControlPlane } from '../infra/test-cluster/control-plane.js';
import { kubeClient, KubeHttpError, type KubeClient } from '../infra/test-cluster/kube-http.js';
import { ProcessKubelet, type ContainerRecipe } from '../infra/test-cluster/process-kubelet.js';
import { CHROMIUM, requireBinary } from './processes.js';

export const NODE = 'bso-node-1';
/** Where sessions' Jobs and pods run (Pod Security `restricted`). */
export const NAMESPACE = 'bso-sessions';
/** Where the router's and agent's ServiceAccount and Secrets live. */
export const SYSTEM_NAMESPACE = 'bso';

/** Images the process kubelet knows; anything else fails to pull. */
export const TEST_IMAGES: Record<string, ContainerRecipe> = {
  'bso/browser-api:test': { kind: 'chromium' },
  'bso/browser-ui:test': { kind: 'http-static', body: 'live view' },
  'bso/crash:test': { kind: 'exit', afterMs: 300, code: 3 },
  'bso/never-ready:test': { kind: 'never-ready' },
};

/** The specification's steel images, and one whose browser never starts (its API answers health, never CDP). */
export const STEEL_IMAGES = { api: 'steel-dev/steel-browser-api:latest', ui: 'steel-dev/steel-browser-ui:latest', neverReady: 'bso/steel-never-ready:test' } as const;

export type SteelPeer = { dir: string; startScript: string };

/**
 * The steel-browser peer as infra/test-cluster/steel.sh built it (`npm test` builds it first): its
 * build, or null with the reason when the peer is not beside the project. A peer that is there but
 * not built is an error, not a skip.
 */
export function steelPeer(): { peer: SteelPeer } | { absent: string } {
  const script = new URL('../infra/test-cluster/steel.sh', import.meta.url).pathname;
  const res = spawnSync('bash', [script], { env: { ...process.env, BSO_STEEL_CHECK_ONLY: '1' }, encoding: 'utf8', timeout: 30_000 });
  if (res.status !== 0) throw new Error(res.stderr.trim() || `steel.sh failed (${res.status ?? res.signal})`);
  const dir = res.stdout.trim().split('\n').pop();
  if (!dir) return { absent: res.stderr.trim() || 'steel.sh found no steel-browser peer' };
  const peerDir = process.env.BSO_STEEL_PEER ?? new URL('../../shared/peers/steel-browser', import.meta.url).pathname;
  return { peer: { dir, startScript: join(peerDir, 'start.sh') } };
}

/** Process-kubelet recipes for the steel images: the real steel API, run as an account of its own. */
export function steelRecipes(peer: SteelPeer): Record<string, ContainerRecipe> {
  const steel = { kind: 'steel', dir: peer.dir, startScript: peer.startScript, user: 'nobody' } as const;
  return {
    [STEEL_IMAGES.api]: steel,
    // steel's published UI image is nginx in front of the same UI the API serves itself (built in, at /ui/):
    // the suite opens that one, on the session's own host.
    [STEEL_IMAGES.ui]: { kind: 'http-static', body: 'steel ui' },
    [STEEL_IMAGES.neverReady]: { ...steel, chromiumPath: '/bin/false' },
  };
}

/**
 * The environment of a Kubernetes agent on `cluster`'s first node, dialing `routerUrl` with the test
 * token: small pod requests, quick scheduling verdicts, metrics on a free loopback port. Suites add
 * their own (`extra` wins).
 */
export function kubeAgentEnv(cluster: TestCluster, routerUrl: string, token: string, clusterId: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ROUTER_URL: routerUrl,
    AGENT_TOKEN: token,
    CLUSTER_ID: clusterId,
    NODE_NAME: cluster.node,
    AGENT_RUNTIME: 'kubernetes',
    KUBECONFIG: cluster.agentKubeconfig,
    K8S_NAMESPACE: NAMESPACE,
    BROWSER_API_IMAGE: cluster.images.api,
    BROWSER_UI_IMAGE: cluster.images.ui,
    JOB_TTL_SECONDS: '60',
    POD_CPU_REQUEST: '100m',
    POD_MEMORY_REQUEST: '64Mi',
    K8S_SCHEDULE_TIMEOUT_MS: '3000',
    METRICS_PORT: '0',
    METRICS_HOST: '127.0.0.1',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...extra,
  };
}

/** The images the suite asks for; on an outside cluster they come from the environment. */
export type SuiteImages = { api: string; ui: string; crash: string; crashReason: RegExp; neverReady: string; missing: string };

export type TestCluster = {
  plane?: ControlPlane;
  /** The node the suite's agents run on and own (their NODE_NAME): the first of `nodes`. */
  node: string;
  /** Every node (process kubelets here; an outside cluster's first, or BSO_TEST_NODE). */
  nodes: string[];
  kubelet?: ProcessKubelet;
  /** Each node's kubelet, by node name (process kubelets only). */
  kubelets: Map<string, ProcessKubelet>;
  images: SuiteImages;
  admin: KubeClient;
  agentKubeconfig: string;
  agent: KubeClient;
  stop(): Promise<void>;
};

const PATHS: Record<string, (ns?: string) => string> = {
  Namespace: () => '/api/v1/namespaces',
  ServiceAccount: (ns) => `/api/v1/namespaces/${ns}/serviceaccounts`,
  Role: (ns) => `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/roles`,
  RoleBinding: (ns) => `/apis/rbac.authorization.k8s.io/v1/namespaces/${ns}/rolebindings`,
  ClusterRole: () => '/apis/rbac.authorization.k8s.io/v1/clusterroles',
  ClusterRoleBinding: () => '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
  ConfigMap: (ns) => `/api/v1/namespaces/${ns}/configmaps`,
  Secret: (ns) => `/api/v1/namespaces/${ns}/secrets`,
  Service: (ns) => `/api/v1/namespaces/${ns}/services`,
  DaemonSet: (ns) => `/apis/apps/v1/namespaces/${ns}/daemonsets`,
  Deployment: (ns) => `/apis/apps/v1/namespaces/${ns}/deployments`,
  NetworkPolicy: (ns) => `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies`,
};

/**
 * Applies the project's own manifests (create; an existing object is fine). Strict field validation
 * makes the real apiserver reject unknown or misspelled fields. `dryRun` validates without keeping.
 */
export async function applyManifest(admin: KubeClient, file: string, opts: { dryRun?: boolean } = {}): Promise<string[]> {
  // Plain objects, as written: client-node's loadAllYaml maps them onto its classes (`from` becomes `_from`).
  return applyDocuments(
    admin,
    parseAllDocuments(readFileSync(file, 'utf8')).flatMap((d) => (d.contents ? [d.toJS()] : [])),
    opts,
  );
}

/** `applyManifest` for objects already parsed (a chart's rendering); returns their kinds in order. */
export async function applyDocuments(admin: KubeClient, docs: unknown[], opts: { dryRun?: boolean } = {}): Promise<string[]> {
  const kinds: string[] = [];
  for (const doc of docs as Array<{ kind: string; metadata: { namespace?: string } }>) {
    const path = PATHS[doc.kind];
    if (!path) throw new Error(`applyManifest: no path for kind ${doc.kind}`);
    kinds.push(doc.kind);
    try {
      await admin.call('POST', `${path(doc.metadata.namespace)}?fieldValidation=Strict${opts.dryRun ? '&dryRun=All' : ''}`, doc);
    } catch (err) {
      if (!(err instanceof KubeHttpError && err.status === 409)) throw err;
    }
  }
  return kinds;
}

/** Thrown inside an `until` check to stop waiting at once. */
export class GiveUp extends Error {}

export async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch((err) => {
      if (err instanceof GiveUp) throw err;
      return undefined;
    });
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Applies the project's namespaces, RBAC and NetworkPolicies; returns a token of the agent's ServiceAccount (TokenRequest). */
async function installProject(admin: KubeClient): Promise<string> {
  const manifests = new URL('../infra/k8s/', import.meta.url).pathname;
  for (const file of ['namespace.yaml', 'rbac.yaml', 'network-policies.yaml']) await applyManifest(admin, join(manifests, file));
  // Pods are refused until the namespace's default ServiceAccount exists.
  await until('default ServiceAccount', () => admin.call('GET', `/api/v1/namespaces/${NAMESPACE}/serviceaccounts/default`), 30_000);
  const tr = await admin.call('POST', `/api/v1/namespaces/${SYSTEM_NAMESPACE}/serviceaccounts/bso-agent/token`, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds: 3600 },
  });
  return tr.status.token as string;
}

/**
 * The real control plane (built from Kubernetes' Go modules, by `npm test` before the suites run), one
 * process-kubelet node, the project's namespace and RBAC applied, and a kubeconfig holding the agent
 * ServiceAccount's token (TokenRequest). Aborting `signal` (a test's afterAll, also when its beforeAll
 * timed out while this was still starting) stops every process and removes the folder at once.
 */
export async function startTestCluster(opts: { signal?: AbortSignal; nodes?: number; images?: Record<string, ContainerRecipe> } = {}): Promise<TestCluster> {
  const outside = process.env.BSO_TEST_KUBECONFIG;
  if (outside) return useOutsideCluster(outside);
  requireBinary(CHROMIUM, 'install the Debian package chromium');
  const binDir = ensureBinaries({ checkOnly: true });
  opts.signal?.throwIfAborted();
  const dir = await mkdtemp(join(tmpdir(), 'bso-cluster-'));
  const nodes = Array.from({ length: opts.nodes ?? 1 }, (_, i) => `bso-node-${i + 1}`);
  const kubelets = new Map<string, ProcessKubelet>();
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await Promise.all([...kubelets.values()].map((k) => k.stop().catch(() => {})));
      stopControlPlane(dir);
    })());
  opts.signal?.addEventListener('abort', () => void stop(), { once: true });
  try {
    const plane = await startControlPlane({ dir, binDir, nodes, signal: opts.signal });
    const admin = kubeClient({ server: plane.server, caFile: plane.caFile, token: plane.adminToken });
    for (const [i, node] of nodes.entries()) {
      const kubelet = new ProcessKubelet({
        access: { server: plane.server, caFile: plane.caFile, token: plane.nodeToken(node) },
        nodeName: node,
        images: { ...TEST_IMAGES, ...opts.images },
        chromiumPath: CHROMIUM,
        addressBlock: i + 1,
        log: process.env.TEST_LOG_LEVEL ? (m) => console.log(m) : undefined,
      });
      kubelets.set(node, kubelet);
      opts.signal?.throwIfAborted();
      await kubelet.start();
    }
    const token = await installProject(admin);
    const agentKubeconfig = plane.kubeconfigFor('bso-agent', token);
    writeFileSync(join(dir, 'agent-token'), token, { mode: 0o600 });
    return {
      plane,
      node: NODE,
      nodes,
      kubelet: kubelets.get(NODE),
      kubelets,
      images: {
        api: 'bso/browser-api:test',
        ui: 'bso/browser-ui:test',
        crash: 'bso/crash:test',
        crashReason: /terminated with exit code 3/,
        neverReady: 'bso/never-ready:test',
        missing: 'bso/not-there:1',
      },
      admin,
      agentKubeconfig,
      agent: kubeClient({ server: plane.server, caFile: plane.caFile, token }),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Any cluster named by BSO_TEST_KUBECONFIG (kind, minikube, a real one): the project's manifests are
 * applied there and the agent runs here with its ServiceAccount's token, so pod IPs must be reachable
 * from this machine. Images come from BSO_TEST_BROWSER_API_IMAGE (serves CDP on 9222, required),
 * BSO_TEST_BROWSER_UI_IMAGE, BSO_TEST_CRASH_IMAGE and BSO_TEST_NEVER_READY_IMAGE.
 */
async function useOutsideCluster(path: string): Promise<TestCluster> {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  const admin = kubeClient({ kubeconfig: kc });
  const api = process.env.BSO_TEST_BROWSER_API_IMAGE;
  if (!api) throw new Error('BSO_TEST_KUBECONFIG is set: BSO_TEST_BROWSER_API_IMAGE must name a browser image serving CDP on port 9222');
  const token = await installProject(admin);
  const cluster = kc.getCurrentCluster()!;
  const dir = await mkdtemp(join(tmpdir(), 'bso-outside-'));
  const agentKubeconfig = join(dir, 'agent.kubeconfig');
  const ca = cluster.caData
    ? `    certificate-authority-data: ${cluster.caData}`
    : cluster.caFile
      ? `    certificate-authority: ${cluster.caFile}`
      : '    insecure-skip-tls-verify: true';
  writeFileSync(
    agentKubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: c',
      '  cluster:',
      `    server: ${cluster.server}`,
      ca,
      'users:',
      '- name: bso-agent',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: c',
      '  context: { cluster: c, user: bso-agent }',
      'current-context: c',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  const agentKc = new KubeConfig();
  agentKc.loadFromFile(agentKubeconfig);
  // The agents own one node: the first the cluster lists, unless BSO_TEST_NODE names another.
  const node = process.env.BSO_TEST_NODE ?? ((await admin.call('GET', '/api/v1/nodes')).items[0]?.metadata?.name as string | undefined);
  if (!node) throw new Error('the cluster named by BSO_TEST_KUBECONFIG lists no node');
  return {
    node,
    nodes: [node],
    kubelets: new Map(),
    images: {
      api,
      ui: process.env.BSO_TEST_BROWSER_UI_IMAGE ?? 'nginx:1.27-alpine',
      crash: process.env.BSO_TEST_CRASH_IMAGE ?? 'busybox:1.36',
      crashReason: /terminated with exit code/,
      neverReady: process.env.BSO_TEST_NEVER_READY_IMAGE ?? 'registry.k8s.io/pause:3.10',
      missing: 'registry.invalid/bso/not-there:1',
    },
    admin,
    agentKubeconfig,
    agent: kubeClient({ kubeconfig: agentKc }),
    stop: async () => {
      await admin.call('DELETE', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs?labelSelector=app%3Dbso-browser&propagationPolicy=Background`).catch(() => {});
    },
  };
}
