import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { startAgent, type RunningAgent } from '../../agent/main.js';
import type { SessionView } from '../../shared/api.js';
import { applyDocuments, applyManifest, GiveUp, kubeAgentEnv, NAMESPACE, startTestCluster, SYSTEM_NAMESPACE, until, type TestCluster } from '../../harness/cluster.js';
import { buildJob, buildWarmJob } from '../../agent/runtime/kubernetes/job.js';
import type { KubernetesRuntime } from '../../agent/runtime/kubernetes/runtime.js';
import { openTestPage, PAGES_ORIGIN, serveTestPages } from '../helpers/pages.js';
import { pendingSession } from '../helpers/session.js';
import { requestOnce, startBalancer } from '../../harness/balancer.js';
import { pidsMatching, startRedis } from '../../harness/processes.js';
import { spawnEntry, type Spawned } from '../../harness/spawn.js';
import { helmChart } from '../../harness/tools.js';
import { json, spawnRouter, startSystem, TEST_KEYS, TEST_TOKEN, type TestSystem } from '../../harness/system.js';

/** A cluster leader's Lease, seconds; and how long a running session may go without its agent. */
const LEADER_LEASE_SEC = 3;
const AGENT_LOST_GRACE_SEC = 8;

describe('kubernetes runtime on a real control plane', () => {
  let cluster: TestCluster;
  let sys: TestSystem;
  const agents = new Map<string, RunningAgent>();
  /** Aborted in afterAll: stops a cluster still starting when beforeAll timed out. */
  const starting = new AbortController();

  const agentEnv = (clusterId: string, extra: Record<string, string> = {}) =>
    kubeAgentEnv(cluster, sys.url, TEST_TOKEN, clusterId, {
      BROWSER_API_PORT: '9222',
      BROWSER_UI_PORT: '8080',
      // Twenty Chromiums starting at once push a 2-core machine's load past 50; a pod may then take a
      // minute to be Ready. Failures (pull errors, crashes, unschedulable) are reported at once anyway.
      START_TIMEOUT_MS: '120000',
      // Leadership and cleanup on a test's time scale; a kubelet renews its node's Lease every 10 s.
      K8S_LEADER_LEASE_SEC: String(LEADER_LEASE_SEC),
      K8S_CLEANUP_INTERVAL_MS: '500',
      K8S_NODE_LOST_SEC: '20',
      ...extra,
    });
  const addAgent = async (clusterId: string, extra: Record<string, string> = {}) => {
    const a = await startAgent(loadAgentConfig(agentEnv(clusterId, extra), false));
    agents.set(clusterId, a);
    await until(`agent ${clusterId}`, async () => (await json(sys.fetch(`${sys.url}/health`))).body.agents.some((x: { cluster: string }) => x.cluster === clusterId), 10_000);
    return a;
  };
  /** Agents as processes of their own, for the tests that kill them. */
  const processes: Spawned[] = [];
  const spawnAgent = async (clusterId: string, node: string) => {
    const p = spawnEntry('agent/main.ts', agentEnv(clusterId, { NODE_NAME: node, LOG_LEVEL: 'info' }));
    processes.push(p);
    await p.waitForLine(/tunnel connected/, 30_000);
    return p;
  };
  const leaseHolder = async (clusterId: string) =>
    ((await cluster.admin.call('GET', `/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NAMESPACE}/leases/bso-leader-${clusterId}`).catch(() => null))?.spec?.holderIdentity as
      string | undefined) ?? '';
  const jobs = async () =>
    (await cluster.admin.call('GET', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs`)).items as Array<{ metadata: { name: string; labels: Record<string, string> } }>;
  const pods = async () => (await cluster.admin.call('GET', `/api/v1/namespaces/${NAMESPACE}/pods`)).items as Array<{ metadata: { name: string; labels: Record<string, string> } }>;
  const create = async (body: object, wait = true) =>
    json<SessionView>(sys.fetch(`${sys.url}/sessions${wait ? '?wait=true' : ''}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }));
  const agentMetric = async (agent: RunningAgent, series: string) => {
    const line = (await (await fetch(agent.metricsUrl)).text()).split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  const statusOf = async (id: string) => (await json(sys.fetch(`${sys.url}/sessions/${id}`))).body as SessionView;
  const nothingLeft = async (id: string) => {
    if (process.env.K8S_DEBUG) {
      for (let i = 0; i < 10; i++) {
        const js = (await cluster.admin.call('GET', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs`)).items.map((j: any) => [
          j.metadata.name,
          j.metadata.deletionTimestamp,
          j.metadata.finalizers,
          j.status,
        ]);
        const ps = (await cluster.admin.call('GET', `/api/v1/namespaces/${NAMESPACE}/pods`)).items.map((p: any) => [
          p.metadata.name,
          p.metadata.deletionTimestamp,
          p.metadata.finalizers,
          p.status.phase,
          p.metadata.ownerReferences?.length,
        ]);
        console.log(JSON.stringify({ js, ps }));
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    await until(
      `job and pod of ${id} gone`,
      async () => !(await jobs()).some((j) => j.metadata.labels['bso.dev/session-id'] === id) && !(await pods()).some((p) => p.metadata.labels['bso.dev/session-id'] === id),
      20_000,
    );
  };

  beforeAll(async () => {
    cluster = await startTestCluster({ signal: starting.signal, nodes: 3 });
    sys = await startSystem({ agents: 0, routerEnv: { MAX_SESSIONS: '40', START_TIMEOUT_MS: '150000', AGENT_LOST_GRACE_SEC: String(AGENT_LOST_GRACE_SEC) } });
    await addAgent('kube');
  }, 180_000);

  afterAll(async () => {
    starting.abort();
    await Promise.all(processes.map((p) => p.stop()));
    await Promise.all([...agents.values()].map((a) => a.close()));
    await sys?.close();
    await cluster?.stop();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  }, 120_000);

  it('create → Job and pod → running → Playwright through the router → DELETE → Job and pod gone', async () => {
    // The chromium profile's contract: the options reach the image as BSO_OPTIONS, which it turns into launch flags.
    const options = { userAgent: 'bso-k8s-chromium/1.0', customOption: 'value' };
    const res = await create({ cluster: 'kube', options });
    expect(res.status).toBe(201);
    const s = res.body;
    expect(s.status).toBe('running');
    if (cluster.kubelet) expect(s.node).toBe('bso-node-1');
    const job = (await jobs()).find((j) => j.metadata.labels['bso.dev/session-id'] === s.id);
    expect(job?.metadata.name).toBe(`bso-${s.id}`);
    const full = await cluster.admin.call('GET', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs/bso-${s.id}`);
    expect(full.spec).toMatchObject({ backoffLimit: 0, ttlSecondsAfterFinished: 60, template: { spec: { restartPolicy: 'Never' } } });
    expect(full.spec.template.spec.containers.map((c: { image: string }) => c.image)).toEqual([cluster.images.api, cluster.images.ui]);
    expect(JSON.parse(full.metadata.annotations['bso.dev/session']).id).toBe(s.id);
    expect(full.spec.template.spec.containers[0].env).toContainEqual({ name: 'BSO_OPTIONS', value: JSON.stringify(options) });

    const browser = await chromium.connectOverCDP(s.cdpUrl);
    const context = browser.contexts()[0] ?? (await browser.newContext());
    await serveTestPages(context);
    const page = await context.newPage();
    await page.goto(`${PAGES_ORIGIN}/`);
    expect(await page.textContent('#greeting')).toBe('Hello from the test');
    if (cluster.kubelet) expect(await page.evaluate(() => navigator.userAgent)).toBe(options.userAgent);
    await browser.close();
    const ui = await fetch(`${s.proxyUrl}/ui/`);
    expect(ui.status).toBe(200);
    if (cluster.kubelet) expect(await ui.text()).toBe('live view');

    const started = Date.now();
    const del = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }));
    expect(del.body.status).toBe('terminated');
    await nothingLeft(s.id);
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('the agent and router manifests are accepted by the real apiserver under strict validation', async () => {
    const dir = new URL('../../infra/k8s/', import.meta.url).pathname;
    expect(await applyManifest(cluster.admin, `${dir}agent.yaml`, { dryRun: true })).toEqual(['ConfigMap', 'Secret', 'DaemonSet']);
    expect(await applyManifest(cluster.admin, `${dir}router.yaml`, { dryRun: true })).toEqual(['Secret', 'Secret', 'Deployment', 'Service']);
  });

  it("the Helm chart's rendering is accepted by the real apiserver under strict validation, with its defaults and with values set", async () => {
    const helm = await helmChart();
    try {
      const workloads = ['ConfigMap', 'Secret', 'Secret', 'Secret', 'DaemonSet', 'Deployment', 'Service'];
      // Namespaces, RBAC and NetworkPolicies exist already (infra/k8s, which the chart's defaults equal): a 409 there.
      const defaults = await applyDocuments(cluster.admin, await helm.template(), { dryRun: true });
      expect(defaults.filter((k) => workloads.includes(k)).sort()).toEqual([...workloads].sort());
      const varied = await helm.template(['--set', 'router.replicas=3,router.redisCa.enabled=false,router.existingSecret=mine,agent.clusterId=east,networkPolicies.enabled=false']);
      const kinds = await applyDocuments(cluster.admin, varied, { dryRun: true });
      expect(kinds).toContain('Deployment');
      expect(kinds).not.toContain('NetworkPolicy');
    } finally {
      await helm.cleanup();
    }
  });

  it("the agent may manage Jobs and watch pods in the sessions' namespace, and nothing else: no Secret in either namespace", async () => {
    await expect(cluster.agent.call('GET', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs`)).resolves.toBeTruthy();
    await expect(cluster.agent.call('GET', `/api/v1/namespaces/${NAMESPACE}/pods`)).resolves.toBeTruthy();
    for (const ns of [NAMESPACE, SYSTEM_NAMESPACE]) {
      await expect(cluster.agent.call('GET', `/api/v1/namespaces/${ns}/secrets`), ns).rejects.toMatchObject({ status: 403 });
      await expect(cluster.agent.call('GET', `/api/v1/namespaces/${ns}/secrets/bso-agent`), ns).rejects.toMatchObject({ status: 403 });
    }
    await expect(cluster.agent.call('GET', `/apis/batch/v1/namespaces/${SYSTEM_NAMESPACE}/jobs`)).rejects.toMatchObject({ status: 403 });
    await expect(cluster.agent.call('GET', '/apis/batch/v1/namespaces/default/jobs')).rejects.toMatchObject({ status: 403 });
    await expect(cluster.agent.call('DELETE', `/api/v1/namespaces/${NAMESPACE}/pods/anything`)).rejects.toMatchObject({ status: 403 });
    await expect(cluster.agent.call('GET', `/apis/networking.k8s.io/v1/namespaces/${NAMESPACE}/networkpolicies`)).rejects.toMatchObject({ status: 403 });
    // Leases: its cluster's leader Lease in its own namespace (get/create/update, no delete, no list), node Leases read-only.
    await expect(cluster.agent.call('GET', `/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NAMESPACE}/leases/bso-leader-none`)).rejects.toMatchObject({ status: 404 });
    await expect(cluster.agent.call('GET', `/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NAMESPACE}/leases`)).rejects.toMatchObject({ status: 403 });
    await expect(cluster.agent.call('DELETE', `/apis/coordination.k8s.io/v1/namespaces/${SYSTEM_NAMESPACE}/leases/bso-leader-kube`)).rejects.toMatchObject({ status: 403 });
    await expect(cluster.agent.call('GET', '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases')).resolves.toMatchObject({ kind: 'LeaseList' });
    await expect(cluster.agent.call('PUT', `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${cluster.node}`, {})).rejects.toMatchObject({ status: 403 });
    await expect(cluster.agent.call('GET', `/apis/coordination.k8s.io/v1/namespaces/${NAMESPACE}/leases`)).rejects.toMatchObject({ status: 403 });
    // Nodes: read one by name (its own allocatable resources), never list or change them.
    await expect(cluster.agent.call('GET', `/api/v1/nodes/${cluster.node}`)).resolves.toMatchObject({ kind: 'Node' });
    await expect(cluster.agent.call('GET', '/api/v1/nodes')).rejects.toMatchObject({ status: 403 });
    await expect(cluster.agent.call('DELETE', `/api/v1/nodes/${cluster.node}`)).rejects.toMatchObject({ status: 403 });
  });

  it("Pod Security `restricted` holds in the sessions' namespace: the session pod passes it, a weaker one is rejected", async () => {
    const ns = await cluster.admin.call('GET', `/api/v1/namespaces/${NAMESPACE}`);
    expect(ns.metadata.labels).toMatchObject({ 'pod-security.kubernetes.io/enforce': 'restricted' });
    const settings = loadAgentConfig(agentEnv('kube'), false).kubernetes;
    const session = pendingSession({ cluster: 'kube', node: cluster.node });
    const template = buildJob(session, { ...settings, cluster: 'kube', node: cluster.node }).spec!.template;
    const asPod = (spec: object) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'bso-psa-probe', namespace: NAMESPACE, labels: template.metadata!.labels }, spec });
    const podsPath = `/api/v1/namespaces/${NAMESPACE}/pods?dryRun=All&fieldValidation=Strict`;
    await expect(cluster.admin.call('POST', podsPath, asPod(template.spec!))).resolves.toMatchObject({ kind: 'Pod' });
    // Each weakening on its own is refused by the real apiserver's admission, even for the admin.
    const weaker: Record<string, (spec: any) => void> = {
      'runs as root': (spec) => (spec.securityContext = { ...spec.securityContext, runAsNonRoot: false, runAsUser: 0 }),
      'keeps capabilities': (spec) => delete spec.containers[0].securityContext.capabilities,
      'may escalate': (spec) => (spec.containers[0].securityContext.allowPrivilegeEscalation = true),
      'no seccomp profile': (spec) => delete spec.securityContext.seccompProfile,
      'mounts a host path': (spec) => spec.volumes.push({ name: 'host', hostPath: { path: '/' } }),
      'shares the host network': (spec) => (spec.hostNetwork = true),
    };
    for (const [what, weaken] of Object.entries(weaker)) {
      const spec = structuredClone(template.spec!);
      weaken(spec);
      await expect(cluster.admin.call('POST', podsPath, asPod(spec)), what).rejects.toMatchObject({
        status: 403,
        body: expect.stringMatching(/violates PodSecurity \\"restricted/),
      });
    }
  });

  it('the NetworkPolicies are in place, accepted under strict validation', async () => {
    const policies = await cluster.admin.call('GET', `/apis/networking.k8s.io/v1/namespaces/${NAMESPACE}/networkpolicies`);
    const byName = new Map<string, any>(policies.items.map((p: any) => [p.metadata.name, p.spec]));
    expect([...byName.keys()].sort()).toEqual(['browser-egress-dns', 'browser-egress-internet', 'browser-ingress-from-agents', 'default-deny']);
    expect(byName.get('default-deny')).toMatchObject({ podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
    const internet = byName.get('browser-egress-internet').egress[0].to;
    expect(internet[0].ipBlock.except).toEqual(expect.arrayContaining(['10.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16', '127.0.0.0/8']));
    // What the apiserver keeps is what the file says: nothing was dropped as unknown.
    const file = new URL('../../infra/k8s/network-policies.yaml', import.meta.url).pathname;
    expect(await applyManifest(cluster.admin, file, { dryRun: true })).toEqual(['NetworkPolicy', 'NetworkPolicy', 'NetworkPolicy', 'NetworkPolicy']);
  });

  it("each agent owns its node: another node's agent of the same cluster neither watches nor adopts its Jobs", async () => {
    const s = (await create({ cluster: 'kube' })).body;
    expect(s).toMatchObject({ status: 'running', node: cluster.node });
    const other = await startAgent(loadAgentConfig(agentEnv('kube', { NODE_NAME: 'bso-node-elsewhere' }), false));
    try {
      await until('the other agent', async () => (await json(sys.fetch(`${sys.url}/health`))).body.agents.some((a: { node: string }) => a.node === 'bso-node-elsewhere'), 10_000);
      // Its watch and its adoption cover its own node's Jobs only: none.
      expect(other.sessions.ids()).toEqual([]);
      expect(await (other.runtime as KubernetesRuntime).recover()).toEqual([]);
      expect((await (agents.get('kube')!.runtime as KubernetesRuntime).recover()).map((x) => x.id)).toContain(s.id);
      // The session is still served by its own node's agent.
      expect((await fetch(`${s.proxyUrl}/json/version`)).status).toBe(200);
      expect((await statusOf(s.id)).status).toBe('running');
    } finally {
      await other.close();
    }
    expect((await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    await nothingLeft(s.id);
  });

  it('the hard timeout deletes the Job', async () => {
    const s = (await create({ cluster: 'kube', timeout: 5 })).body;
    expect(s.status).toBe('running');
    await until('timed_out', async () => (await statusOf(s.id)).status === 'timed_out', 15_000);
    await nothingLeft(s.id);
  });

  it('a warm pool: warm pods are Ready before any create; a create claims one (relabelled, its options set over CDP) and the pool refills; the next agent adopts the session and sets its options again; warm Jobs go when their agent stops, and those an earlier agent left when the next starts', async () => {
    const POOL = 2;
    const settings = loadAgentConfig(agentEnv('warm'), false).kubernetes;
    // An earlier agent's warm Job on this node: the new agent deletes it before filling its pool.
    const leftover = buildWarmJob('bso-warm-leftover', { ...settings, cluster: 'warm', node: cluster.node }, 60);
    await cluster.admin.call('POST', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs`, leftover);
    type Pod = { metadata: { name: string; labels: Record<string, string>; deletionTimestamp?: string }; status: { conditions?: Array<{ type: string; status: string }> } };
    const warmPods = async () =>
      ((await pods()) as Pod[]).filter(
        (p) =>
          p.metadata.labels['bso.dev/cluster'] === 'warm' &&
          p.metadata.labels['bso.dev/warm'] &&
          !p.metadata.deletionTimestamp &&
          p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      );
    const agent = await addAgent('warm', { WARM_POOL_SIZE: String(POOL), WARM_POOL_MIN_SIZE: String(POOL) });
    expect((await jobs()).map((j) => j.metadata.name)).not.toContain('bso-warm-leftover');
    const ready = await until('the warm pods Ready', async () => ((await warmPods()).length === POOL ? await warmPods() : null), 60_000);
    expect(ready.every((p) => !p.metadata.labels['bso.dev/session-id'] && p.metadata.labels['bso.dev/node'] === cluster.node)).toBe(true);

    const options = { userAgent: 'bso-k8s-warm/1.0', viewport: { width: 1111, height: 777 }, locale: 'de-DE', timezone: 'Asia/Tokyo' };
    const res = await create({ cluster: 'warm', options });
    expect(res.body.status).toBe('running');
    const s = res.body;
    // Its Job and pod are one of the warm ones, now the session's: its id, its record, its deadline.
    const job = (await jobs()).find((j) => j.metadata.labels['bso.dev/session-id'] === s.id)!;
    expect(ready.map((p) => p.metadata.labels['bso.dev/warm'])).toContain(job.metadata.name);
    const full = await cluster.admin.call('GET', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs/${job.metadata.name}`);
    expect(full.metadata.labels['bso.dev/warm']).toBeUndefined();
    expect(JSON.parse(full.metadata.annotations['bso.dev/session'])).toMatchObject({ id: s.id, options });
    expect(full.spec.activeDeadlineSeconds).toBeGreaterThanOrEqual(s.timeout + 30);
    const pod = ((await pods()) as Pod[]).find((p) => p.metadata.labels['bso.dev/session-id'] === s.id)!;
    expect(pod.metadata.labels['bso.dev/warm']).toBeUndefined();
    // A second claim of the same Job is refused by the apiserver: the claim tests that the Job is still warm.
    await expect(
      cluster.admin.call(
        'PATCH',
        `/apis/batch/v1/namespaces/${NAMESPACE}/jobs/${job.metadata.name}`,
        [{ op: 'test', path: '/metadata/labels/bso.dev~1warm', value: job.metadata.name }],
        'application/json-patch+json',
      ),
    ).rejects.toMatchObject({ status: 422 });
    expect(await agentMetric(agent, 'browser_warm_pool_claims_total{outcome="hit"}')).toBe(1);

    const seen = (p: import('playwright-core').Page) =>
      p.evaluate(() => [navigator.userAgent, innerWidth, innerHeight, navigator.language, Intl.DateTimeFormat().resolvedOptions().timeZone]);
    const want = [options.userAgent, 1111, 777, 'de-DE', 'Asia/Tokyo'];
    const browser = await chromium.connectOverCDP(s.cdpUrl);
    const context = browser.contexts()[0]!;
    expect(await seen(context.pages()[0] ?? (await context.newPage()))).toEqual(want);
    await serveTestPages(context);
    const opened = await context.newPage();
    await opened.goto(`${PAGES_ORIGIN}/`);
    expect(await seen(opened)).toEqual(want);
    await browser.close();
    await until('the pool refilled', async () => (await warmPods()).filter((p) => !ready.some((r) => r.metadata.name === p.metadata.name)).length === 1, 60_000);

    // The agent's shutdown takes its warm Jobs and leaves the session's; the next agent adopts it and sets its options again.
    const warmJobs = async () => (await jobs()).filter((j) => j.metadata.labels['bso.dev/cluster'] === 'warm').map((j) => j.metadata.name);
    await agent.close();
    agents.delete('warm');
    expect(await warmJobs()).toEqual([job.metadata.name]);
    const next = await addAgent('warm', { WARM_POOL_SIZE: String(POOL), WARM_POOL_MIN_SIZE: String(POOL) });
    await until('the session adopted', async () => next.sessions.browser(s.id) !== null && (await statusOf(s.id)).status === 'running', 30_000);
    const again = await chromium.connectOverCDP(s.cdpUrl);
    expect(await seen(await again.contexts()[0]!.newPage())).toEqual(want);
    await again.close();

    expect((await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    await nothingLeft(s.id);
    await next.close();
    agents.delete('warm');
    await until('the warm jobs gone', async () => (await warmJobs()).length === 0, 20_000);
    await until('the warm pods gone', async () => !(await pods()).some((p) => p.metadata.labels['bso.dev/cluster'] === 'warm'), 20_000);
  });

  it.each([
    ['image pull error', 'pull', () => ({ BROWSER_API_IMAGE: cluster.images.missing }), () => /ErrImagePull|ImagePullBackOff/],
    ['crash', 'crash', () => ({ BROWSER_API_IMAGE: cluster.images.crash }), () => cluster.images.crashReason],
    ['never ready', 'never', () => ({ BROWSER_API_IMAGE: cluster.images.neverReady, START_TIMEOUT_MS: '4000' }), () => /not ready within 4000 ms/],
    ['unschedulable', 'huge', () => ({ POD_CPU_REQUEST: '5000', POD_CPU_LIMIT: '5000' }), () => /unschedulable/],
  ])('%s ends as failed with its reason and no Job left', async (_name, clusterId, extra, reasonOf) => {
    const reason = reasonOf();
    await addAgent(clusterId, extra());
    const res = await create({ cluster: clusterId });
    expect(res.status).toBe(201);
    const s = await until(
      'failed',
      async () => {
        const v = await statusOf(res.body.id);
        return v.status === 'failed' ? v : null;
      },
      30_000,
    );
    expect(s.failureReason).toMatch(reason);
    await nothingLeft(s.id);
  });

  it('twenty sessions at once all reach running and are all cleaned up', { timeout: 420_000 }, async () => {
    const created = await Promise.all(Array.from({ length: 20 }, () => create({ cluster: 'kube' }, false)));
    expect(created.every((r) => r.status === 201)).toBe(true);
    const ids = created.map((r) => r.body.id);
    for (const id of ids) {
      await until(
        `${id} running`,
        async () => {
          const s = await statusOf(id);
          if (s.status === 'failed') throw new GiveUp(`${id} failed: ${s.failureReason}`);
          return s.status === 'running';
        },
        180_000,
      );
    }
    await Promise.all(ids.map((id) => sys.fetch(`${sys.url}/sessions/${id}`, { method: 'DELETE' })));
    await until('all jobs and pods gone', async () => (await jobs()).length === 0 && (await pods()).length === 0, 90_000);
  });

  it('an agent restarted in the middle of a burst leaves nothing orphaned', async () => {
    const created = await Promise.all(Array.from({ length: 10 }, () => create({ cluster: 'kube' }, false)));
    const ids = created.map((r) => r.body.id);
    await new Promise((r) => setTimeout(r, 300));
    await agents.get('kube')!.close();
    agents.delete('kube');
    await addAgent('kube');
    // Every session settles one way or the other; none stays pending.
    for (const id of ids) await until(`${id} settled`, async () => ['running', 'failed'].includes((await statusOf(id)).status), 180_000);
    const running: string[] = [];
    for (const id of ids) if ((await statusOf(id)).status === 'running') running.push(id);
    // Each Job left belongs to a running session; nothing else.
    const jobIds = (await jobs()).map((j) => j.metadata.labels['bso.dev/session-id']).sort();
    await until(
      'only running sessions keep jobs',
      async () => {
        const now = (await jobs()).map((j) => j.metadata.labels['bso.dev/session-id']).sort();
        return JSON.stringify(now) === JSON.stringify([...running].sort());
      },
      30_000,
    ).catch((err) => {
      throw new Error(`${err.message}: jobs ${jobIds.join(',')} vs running ${running.join(',')}`);
    });
    await Promise.all(ids.map((id) => sys.fetch(`${sys.url}/sessions/${id}`, { method: 'DELETE' })));
    await until('all jobs and pods gone', async () => (await jobs()).length === 0 && (await pods()).length === 0, 60_000);
  }, 240_000);
  it("the cluster's agents elect one leader; it cleans up after an agent that died and Jobs nobody knows; when it dies another takes over within the lease and cleanup goes on", async () => {
    const first = await spawnAgent('lead', 'bso-node-3');
    await until('a leader', async () => (await leaseHolder('lead')).startsWith('bso-node-3_'), 15_000);
    const worker = await spawnAgent('lead', 'bso-node-2');
    // Placement takes turns between the two nodes' agents: one session on each.
    const sessions = [(await create({ cluster: 'lead' })).body, (await create({ cluster: 'lead' })).body];
    expect(sessions.map((x) => x.status)).toEqual(['running', 'running']);
    const onTwo = sessions.find((x) => x.node === 'bso-node-2')!;
    const onThree = sessions.find((x) => x.node === 'bso-node-3')!;
    expect(onTwo && onThree).toBeTruthy();
    for (const x of sessions) expect((await pods()).find((p) => p.metadata.labels['bso.dev/session-id'] === x.id)).toMatchObject({ spec: { nodeName: x.node } });

    // A Job no session record knows, on a node without an agent: the leader deletes it.
    const settings = loadAgentConfig(agentEnv('lead'), false).kubernetes;
    const stray = pendingSession({ cluster: 'lead', node: 'bso-node-gone' });
    await cluster.admin.call('POST', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs`, buildJob(stray, { ...settings, cluster: 'lead', node: 'bso-node-gone' }));

    // The node-2 agent dies: its session fails after the grace period and the leader deletes its Job.
    worker.proc.kill('SIGKILL');
    await until('agent lost', async () => (await statusOf(onTwo.id)).status === 'failed', (AGENT_LOST_GRACE_SEC + 15) * 1000);
    expect((await statusOf(onTwo.id)).failureReason).toMatch(/^agent lost/);
    await nothingLeft(onTwo.id);
    await until('the stray Job deleted', async () => !(await jobs()).some((j) => j.metadata.labels['bso.dev/session-id'] === stray.id), 15_000);
    expect((await statusOf(onThree.id)).status).toBe('running');

    // Its node's agent comes back and adopts nothing (its Job is gone; node-3's is not its own).
    const back = await spawnAgent('lead', 'bso-node-2');
    expect(back.lines.some((l) => l.includes('adopting session'))).toBe(false);

    // The leader dies: the other agent takes the Lease within its duration (as it observes it), and
    // cleans up after it (its session fails once its grace is over; its Job goes).
    const killedAt = Date.now();
    first.proc.kill('SIGKILL');
    await until('a new leader', async () => (await leaseHolder('lead')).startsWith('bso-node-2_'), (LEADER_LEASE_SEC + 10) * 1000);
    const takeover = Date.now() - killedAt;
    expect(takeover).toBeLessThan((LEADER_LEASE_SEC + 3) * 1000);
    await until('agent lost', async () => (await statusOf(onThree.id)).status === 'failed', (AGENT_LOST_GRACE_SEC + 15) * 1000);
    await nothingLeft(onThree.id);
    expect((await jobs()).filter((j) => j.metadata.labels['bso.dev/cluster'] === 'lead')).toEqual([]);
  }, 120_000);

  it("three nodes with an agent each, three router replicas behind a balancer: thirty sessions spread over the nodes, each pod on its agent's node, Playwright drives each through the balancer", async () => {
    const redis = await startRedis();
    const replicas: Spawned[] = [];
    const ports: number[] = [];
    const spread: RunningAgent[] = [];
    const browsers: Browser[] = [];
    const balancer = await startBalancer(() => ports.map((port) => ({ host: '127.0.0.1', port })));
    const key = { authorization: `Bearer ${TEST_KEYS.user}` };
    try {
      for (const id of ['replica-a', 'replica-b', 'replica-c']) {
        const replica = await spawnRouter(redis.url, { PUBLIC_URL: balancer.url, REPLICA_ID: id, MAX_SESSIONS: '40', START_TIMEOUT_MS: '150000' });
        replicas.push(replica.proc);
        ports.push(replica.port);
      }
      for (const node of cluster.nodes) spread.push(await startAgent(loadAgentConfig({ ...agentEnv('spread', { NODE_NAME: node }), ROUTER_URL: balancer.url }, false)));
      await until('a tunnel from every agent to every replica', async () => spread.every((a) => a.tunnel.replicas.length === 3), 30_000);

      const created = await Promise.all(
        Array.from({ length: 30 }, () =>
          requestOnce(`${balancer.url}/sessions?wait=true&waitTimeout=120`, {
            method: 'POST',
            headers: { ...key, 'content-type': 'application/json' },
            body: JSON.stringify({ cluster: 'spread' }),
            timeoutMs: 150_000,
          }),
        ),
      );
      expect(created.map((c) => c.status)).toEqual(Array(30).fill(201));
      const ids = created.map((c) => (c.body as SessionView).id);
      const viewOf = async (id: string) => (await requestOnce(`${balancer.url}/sessions/${id}`, { headers: key })).body as SessionView;
      for (const id of ids) await until(`${id} running`, async () => (await viewOf(id)).status === 'running', 120_000);
      const sessions = await Promise.all(ids.map(viewOf));
      const perNode = Object.fromEntries(cluster.nodes.map((n) => [n, sessions.filter((x) => x.node === n).length]));
      for (const n of cluster.nodes) expect(perNode[n], JSON.stringify(perNode)).toBeGreaterThanOrEqual(8);
      const podList = await pods();
      for (const x of sessions) expect(podList.find((p) => p.metadata.labels['bso.dev/session-id'] === x.id)).toMatchObject({ spec: { nodeName: x.node } });

      for (const x of sessions) {
        expect(new URL(x.cdpUrl).port).toBe(String(balancer.port));
        const { browser, page } = await openTestPage(x.cdpUrl);
        browsers.push(browser);
        expect(await page.evaluate('window.answer')).toBe(42);
      }
      expect(balancer.served.filter((n) => n > 0)).toHaveLength(3);

      const deleted = await Promise.all(ids.map((id) => requestOnce(`${balancer.url}/sessions/${id}`, { method: 'DELETE', headers: key })));
      const ended = deleted.map((d) => `${d.body.status}${d.body.failureReason ? `: ${d.body.failureReason}` : ''}`);
      expect(ended).toEqual(Array(30).fill('terminated'));
      await until(
        'every spread Job and pod gone',
        async () =>
          !(await jobs()).some((j) => j.metadata.labels['bso.dev/cluster'] === 'spread') && !(await pods()).some((p) => p.metadata.labels['bso.dev/cluster'] === 'spread'),
        90_000,
      );
    } finally {
      await Promise.all(browsers.map((b) => b.close().catch(() => {})));
      await Promise.all(spread.map((a) => a.close()));
      await Promise.all(replicas.map((r) => r.stop()));
      await balancer.close();
      await redis.stop();
    }
  }, 420_000);

  // Last: it stops a node for good.
  it('a node that dies (its kubelet stops): its sessions fail as "node lost" within 30 s and their Jobs are deleted', async () => {
    const s = (await create({ cluster: 'kube' })).body;
    expect(s).toMatchObject({ status: 'running', node: cluster.node });
    const stoppedAt = Date.now();
    await cluster.kubelets.get(cluster.node)!.stop();
    await until('node lost', async () => (await statusOf(s.id)).status === 'failed', 30_000);
    expect((await statusOf(s.id)).failureReason).toMatch(new RegExp(`^node lost: node "${cluster.node}"`));
    await until('its Job deleted', async () => !(await jobs()).some((j) => j.metadata.labels['bso.dev/session-id'] === s.id), 30_000 - (Date.now() - stoppedAt));
    expect(Date.now() - stoppedAt).toBeLessThan(30_000);
  }, 60_000);
});
