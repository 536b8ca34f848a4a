/**
 * The install path a user walks, on a real node: the images `npm run images` built (checked against
 * the Dockerfile), imported into containerd's store; `infra/k8s/` applied with kubectl after setting
 * what README says to set; the router as a Deployment behind its Service, the agent as a DaemonSet pod
 * dialling it with its mounted ServiceAccount token; sessions as real pods from the browser image,
 * driven by Playwright through the router Service's address.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IMAGE_RECIPES, IMAGE_ENV, IMAGE_WORKDIR } from '../../infra/images/recipes.js';
import { imageLayout, imageRef } from '../../infra/images/build.js';
import { ensureBinaries } from '../../infra/test-cluster/control-plane.js';
import { startRealNode, type RealNode } from '../../infra/test-cluster/real-node.js';
import { dockerfileStage, readLayout, type LayoutEntry } from '../../harness/images.js';
import { installOnRealNode, type InstalledProject, type InstallSecrets } from '../../harness/install.js';
import { until } from '../../harness/cluster.js';

const repo = join(import.meta.dirname, '../..');
const version = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
const ref = (name: string) => imageRef(name, version);
const SESSIONS_NAMESPACE = 'bso-sessions';
/** The browser pods' user, as infra/k8s/agent.yaml sets it (POD_RUN_AS_USER). */
const POD_USER = '1000';

type PodList = { items: Array<{ metadata: { name: string; labels?: Record<string, string> }; status: { podIP?: string; phase?: string } }> };

describe('a real node: built images, infra/k8s applied with kubectl, sessions as real pods', () => {
  let node: RealNode | undefined;
  let layout: Map<string, LayoutEntry>;
  let secrets: InstallSecrets;
  let installed: InstalledProject | undefined;
  let base = '';
  const browsers: Browser[] = [];
  /** Aborted in afterAll: a node still starting when beforeAll timed out stops, and afterAll waits for that. */
  const starting = new AbortController();
  let startingNode: Promise<RealNode> | undefined;

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${secrets.adminKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(150_000),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, any>) : {} };
  };
  const kubectlJson = async <T>(args: string[]) => JSON.parse(await node!.kubectl([...args, '-o', 'json'])) as T;
  const sessionPods = async (id: string) => (await kubectlJson<PodList>(['-n', SESSIONS_NAMESPACE, 'get', 'pods', '-l', `bso.dev/session-id=${id}`])).items;
  const connect = async (cdpUrl: string) => {
    const browser = await chromium.connectOverCDP(cdpUrl, { timeout: 60_000 });
    browsers.push(browser);
    return browser;
  };

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('the real-node suite makes network and mount namespaces and runs a kubelet: it needs root (CI runs as root)');
    const path = imageLayout(version);
    if (!existsSync(join(path, 'index.json'))) throw new Error(`no images at ${path}: run 'npm run images' ('npm test' runs it before the tests)`);
    layout = readLayout(path);
    const start = startRealNode({
      binaries: { node: ensureBinaries({ checkOnly: true, script: 'node.sh' }), controlPlane: ensureBinaries({ checkOnly: true }) },
      layout: path,
      timeoutMs: 300_000,
      signal: starting.signal,
    });
    startingNode = start;
    node = await start;
    installed = await installOnRealNode(node, { repo, version, clusterId: 'real-1' });
    base = installed.base;
    secrets = installed.secrets;
  }, 600_000);

  afterAll(async () => {
    starting.abort();
    await startingNode?.catch(() => {});
    for (const b of browsers) await b.close().catch(() => {});
    await installed?.close();
    await node?.stop();
  }, 120_000);

  it.each(IMAGE_RECIPES.map((r) => [r.name]))(
    "the %s image is its Dockerfile stage: user (not root), command, ports, environment, labels; it is what containerd's store holds",
    async (name) => {
      const image = layout.get(ref(name));
      expect(image, `${ref(name)} in the layout`).toBeDefined();
      const { config } = image!.config;
      const stage = dockerfileStage(join(repo, 'Dockerfile'), name);
      expect(config.User).toBe(stage.user);
      expect(Number(config.User!.split(':')[0])).toBeGreaterThan(0);
      expect(config.Cmd).toEqual(stage.cmd);
      expect(config.Entrypoint ?? []).toEqual(stage.entrypoint);
      expect(config.WorkingDir).toBe(stage.workdir);
      expect(Object.keys(config.ExposedPorts ?? {})).toEqual(stage.ports);
      for (const [key, value] of Object.entries(stage.env)) expect(config.Env).toContain(`${key}=${value}`);
      expect(config.Env).toEqual(IMAGE_ENV);
      expect(config.WorkingDir).toBe(IMAGE_WORKDIR);
      expect(config.Labels).toMatchObject({ 'org.opencontainers.image.version': version, 'org.opencontainers.image.title': `bso-${name}` });
      expect(image!.config.rootfs.diff_ids).toEqual(image!.layers.map((l) => l.digest));
      // The node runs exactly these bytes.
      const stored = await node!.ctr(['images', 'ls']);
      expect(stored).toMatch(
        new RegExp(`docker\\.io/${ref(name).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\s+application/vnd\\.oci\\.image\\.manifest\\.v1\\+json\\s+${image!.manifestDigest}`),
      );
    },
  );

  it('the router and agent images start and answer /livez (each pod, by its own address)', async () => {
    for (const [ns, label, port] of [
      ['bso', 'app=bso-router', 3000],
      ['bso', 'app=bso-agent', 9464],
    ] as const) {
      const pods = (await kubectlJson<PodList>(['-n', ns, 'get', 'pods', '-l', label])).items;
      expect(pods.length, label).toBeGreaterThan(0);
      for (const pod of pods) {
        const live = await node!.forward(() => ({ host: pod.status.podIP!, port }));
        try {
          const res = await fetch(`http://127.0.0.1:${live.port}/livez`, { signal: AbortSignal.timeout(10_000) });
          expect(res.status, pod.metadata.name).toBe(200);
          expect(await res.text()).toMatch(/ok/);
        } finally {
          await live.close();
        }
      }
    }
  });

  it('a session is a real pod from the browser image: Playwright drives it through the Service; the pod is hardened; DELETE leaves no Job, pod or container', async () => {
    const created = await api('POST', '/sessions?wait=true', { options: { userAgent: 'bso-real-node/1', locale: 'de-DE', viewport: { width: 1111, height: 777 } } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.status).toBe('running');
    const id = created.body.id as string;
    expect(new URL(created.body.cdpUrl as string).host).toBe(new URL(base).host);

    const browser = await connect(created.body.cdpUrl as string);
    const page = await browser.contexts()[0]!.newPage();
    await page.setContent('<p id="x">driven through the router Service</p>');
    expect(await page.evaluate(() => [document.getElementById('x')!.textContent, navigator.userAgent, navigator.language, innerWidth])).toEqual([
      'driven through the router Service',
      'bso-real-node/1',
      'de-DE',
      1111,
    ]);

    const [pod] = await sessionPods(id);
    expect(pod, 'the session pod').toBeDefined();
    const inBrowser = (script: string) => node!.kubectl(['-n', SESSIONS_NAMESPACE, 'exec', pod!.metadata.name, '-c', 'browser', '--', 'sh', '-c', script]);
    // The browser runs as the pod's unprivileged user, on a read-only root, without an API token.
    expect((await inBrowser('id -u; id -g')).trim().split('\n')).toEqual([POD_USER, POD_USER]);
    expect(await inBrowser('touch /probe 2>&1 || true')).toMatch(/Read-only file system/);
    expect(await inBrowser('test -e /var/run/secrets/kubernetes.io && echo present || echo absent')).toBe('absent\n');
    // Every process of the container (node, then Chromium and its helpers) runs as that user.
    const uids = (await inBrowser("grep -h '^Uid:' /proc/[0-9]*/status | sort -u")).trim().split('\n');
    expect(uids).toEqual([`Uid:\t${POD_USER}\t${POD_USER}\t${POD_USER}\t${POD_USER}`]);
    expect(Number((await inBrowser('ls -d /proc/[0-9]* | wc -l')).trim())).toBeGreaterThan(3);
    // The agent's pod does hold its token (the DaemonSet's ServiceAccount), so the check above can fail.
    const [agentPod] = (await kubectlJson<PodList>(['-n', 'bso', 'get', 'pods', '-l', 'app=bso-agent'])).items;
    expect(
      await node!.kubectl(['-n', 'bso', 'exec', agentPod!.metadata.name, '--', 'sh', '-c', 'test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo present']),
    ).toBe('present\n');

    const containersOf = async (podName: string) => (await node!.ctr(['containers', 'ls', '-q', `labels."io.kubernetes.pod.name"==${podName}`])).split('\n').filter(Boolean);
    expect((await containersOf(pod!.metadata.name)).length).toBeGreaterThanOrEqual(3); // sandbox, browser, ui

    expect((await api('DELETE', `/sessions/${id}`)).status).toBe(200);
    await until(
      'no Job, pod or container left',
      async () => {
        const jobs = (await kubectlJson<{ items: unknown[] }>(['-n', SESSIONS_NAMESPACE, 'get', 'jobs', '-l', `bso.dev/session-id=${id}`])).items;
        return jobs.length === 0 && (await sessionPods(id)).length === 0 && (await containersOf(pod!.metadata.name)).length === 0;
      },
      // The kubelet removes a deleted pod's exited containers at its next garbage collection (each minute).
      150_000,
    );
  });

  it('the agent pod deleted while a session runs: the DaemonSet makes another, which adopts the Job, and the session keeps working', async () => {
    const created = await api('POST', '/sessions?wait=true', {});
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const id = created.body.id as string;
    const cdpUrl = created.body.cdpUrl as string;
    const first = await connect(cdpUrl);
    const page = await first.contexts()[0]!.newPage();
    await page.setContent('<title>kept</title><p>before the agent went</p>');
    const [before] = (await kubectlJson<PodList>(['-n', 'bso', 'get', 'pods', '-l', 'app=bso-agent'])).items;
    const [sessionPod] = await sessionPods(id);

    await node!.kubectl(['-n', 'bso', 'delete', 'pod', before!.metadata.name, '--wait=true', '--timeout=120s'], { timeoutMs: 130_000 });
    const after = await until(
      'a new agent pod, Ready',
      async () =>
        (
          await kubectlJson<{ items: Array<{ metadata: { name: string }; status: { conditions?: Array<{ type: string; status: string }> } }> }>([
            '-n',
            'bso',
            'get',
            'pods',
            '-l',
            'app=bso-agent',
          ])
        ).items.find((p) => p.metadata.name !== before!.metadata.name && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')),
      180_000,
    );
    expect(after.metadata.name).not.toBe(before!.metadata.name);
    // The same Job and pod: adopted, not replaced.
    expect((await sessionPods(id)).map((p) => p.metadata.name)).toEqual([sessionPod!.metadata.name]);
    await until('the session served again', async () => (await api('GET', `/sessions/${id}/status`)).body.status === 'running', 60_000);

    const second = await until('a new connection through the adopting agent', () => chromium.connectOverCDP(cdpUrl, { timeout: 20_000 }).catch(() => undefined), 120_000);
    browsers.push(second);
    const titles = await Promise.all(
      second
        .contexts()
        .flatMap((c) => c.pages())
        .map((p) => p.title()),
    );
    expect(titles).toContain('kept');
    const fresh = await second.contexts()[0]!.newPage();
    await fresh.setContent('<p id="y">after</p>');
    expect(await fresh.evaluate(() => document.getElementById('y')!.textContent)).toBe('after');

    expect((await api('DELETE', `/sessions/${id}`)).status).toBe(200);
    await until('the Job gone', async () => (await sessionPods(id)).length === 0, 90_000);
  });
});
