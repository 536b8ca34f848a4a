/**
 * `infra/k8s/` as a user makes it theirs before `kubectl apply` (README, "Install on Kubernetes"): the
 * images' names, the Secrets' values, the router's address for the agents and the cluster's id. Every
 * other field stays as written, and every object of every file is applied.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { imageRef } from '../infra/images/build.js';
import type { RealNode } from '../infra/test-cluster/real-node.js';
import { until } from './cluster.js';
import type { K8sObject } from './tools.js';

export const INSTALL_FILES = ['namespace.yaml', 'rbac.yaml', 'network-policies.yaml', 'router.yaml', 'agent.yaml'] as const;

export type InstallValues = {
  images: { router: string; agent: string; browser: string; browserUi: string };
  redisUrl: string;
  redisCaPem: string;
  /** What the agents dial: the router Service by its cluster DNS name. */
  routerUrl: string;
  /** `ws://` to the router's Service inside the cluster: the agents must be allowed cleartext. */
  allowInsecureTunnel: boolean;
  /** Where clients reach the router: every cdpUrl's base. */
  publicUrl: string;
  clusterId: string;
};

export type InstallSecrets = { agentToken: string; adminKey: string; sessionTokenSecret: string; metricsToken: string };

export const newInstallSecrets = (): InstallSecrets => ({
  agentToken: randomBytes(24).toString('hex'),
  adminKey: randomBytes(24).toString('hex'),
  sessionTokenSecret: randomBytes(32).toString('hex'),
  metricsToken: randomBytes(24).toString('hex'),
});

/** The objects of `infra/k8s/`, in apply order, with the values a user sets. */
export function installObjects(repo: string, values: InstallValues, secrets: InstallSecrets): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const file of INSTALL_FILES) {
    for (const doc of parseAllDocuments(readFileSync(join(repo, 'infra/k8s', file), 'utf8'))) {
      const obj = doc.toJS() as K8sObject | null;
      if (obj) objects.push(obj);
    }
  }
  const find = (kind: string, name: string) => {
    const obj = objects.find((o) => o.kind === kind && o.metadata.name === name);
    if (!obj) throw new Error(`infra/k8s has no ${kind} ${name}`);
    return obj as K8sObject & Record<string, any>;
  };
  Object.assign(find('Secret', 'bso-router').stringData, {
    AGENT_TOKEN: secrets.agentToken,
    REDIS_URL: values.redisUrl,
    ADMIN_API_KEYS: `admin:${secrets.adminKey}`,
    SESSION_TOKEN_SECRET: secrets.sessionTokenSecret,
    METRICS_TOKEN: secrets.metricsToken,
  });
  find('Secret', 'bso-redis-ca').stringData['ca.crt'] = values.redisCaPem;
  const router = find('Deployment', 'bso-router').spec.template.spec.containers[0];
  router.image = values.images.router;
  const publicUrl = (router.env as Array<{ name: string; value?: string }>).find((e) => e.name === 'PUBLIC_URL');
  if (!publicUrl) throw new Error('router.yaml sets no PUBLIC_URL');
  publicUrl.value = values.publicUrl;
  find('Secret', 'bso-agent').stringData.AGENT_TOKEN = secrets.agentToken;
  Object.assign(find('ConfigMap', 'bso-agent').data, {
    ROUTER_URL: values.routerUrl,
    ALLOW_INSECURE_TUNNEL: String(values.allowInsecureTunnel),
    CLUSTER_ID: values.clusterId,
    BROWSER_API_IMAGE: values.images.browser,
    BROWSER_UI_IMAGE: values.images.browserUi,
  });
  find('DaemonSet', 'bso-agent').spec.template.spec.containers[0].image = values.images.agent;
  return objects;
}

export type InstalledProject = {
  /** The router as clients reach it (its PUBLIC_URL): a loopback port piped to its Service. */
  base: string;
  secrets: InstallSecrets;
  close(): Promise<void>;
};

/**
 * Installs the project on a real-node cluster the way README's "Install on Kubernetes" does: the
 * images `npm run images` built (already in the node's store), `infra/k8s/` with the values set, then
 * waits for both rollouts and for the agent's tunnel. `agentConfig` adds to the agent's ConfigMap.
 */
export async function installOnRealNode(
  node: RealNode,
  opts: { repo: string; version: string; clusterId: string; agentConfig?: Record<string, string> },
): Promise<InstalledProject> {
  let routerIp = '';
  // Clients reach the router through this port: its PUBLIC_URL, as an Ingress's address would be.
  const forward = await node.forward(() => ({ host: routerIp, port: 80 }));
  const base = `http://127.0.0.1:${forward.port}`;
  const secrets = newInstallSecrets();
  const image = (name: string) => imageRef(name, opts.version);
  try {
    const objects = installObjects(
      opts.repo,
      {
        images: { router: image('router'), agent: image('agent'), browser: image('browser-api'), browserUi: image('browser-ui') },
        redisUrl: node.info.redis.url,
        redisCaPem: readFileSync(node.info.redis.caFile, 'utf8'),
        routerUrl: 'ws://bso-router.bso.svc.cluster.local',
        allowInsecureTunnel: true,
        publicUrl: base,
        clusterId: opts.clusterId,
      },
      secrets,
    );
    const agentConfig = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === 'bso-agent') as { data: Record<string, string> } | undefined;
    Object.assign(agentConfig!.data, opts.agentConfig);
    await node.kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }) });
    routerIp = (await node.kubectl(['-n', 'bso', 'get', 'service', 'bso-router', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    await node.kubectl(['-n', 'bso', 'rollout', 'status', 'deployment/bso-router', '--timeout=240s'], { timeoutMs: 250_000 });
    await node.kubectl(['-n', 'bso', 'rollout', 'status', 'daemonset/bso-agent', '--timeout=240s'], { timeoutMs: 250_000 });
    // Clients land on either replica: the agent must hold a tunnel to each before a session's CDP can
    // go through whichever one a connection reaches (it says how many it holds as each one opens).
    const replicas = Number(await node.kubectl(['-n', 'bso', 'get', 'deployment', 'bso-router', '-o', 'jsonpath={.spec.replicas}']));
    await until(
      `the agent's tunnels to all ${replicas} router replicas`,
      async () => {
        const log = await node.kubectl(['-n', 'bso', 'logs', 'daemonset/bso-agent']).catch(() => '');
        return log.split('\n').some((line) => line.includes('"msg":"tunnel connected"') && line.includes(`"tunnels":${replicas}`));
      },
      120_000,
    );
    const health = await fetch(`${base}/health`, { headers: { authorization: `Bearer ${secrets.adminKey}` }, signal: AbortSignal.timeout(10_000) });
    const agents = ((await health.json()) as { agents: Array<{ cluster: string }> }).agents;
    if (!agents.some((a) => a.cluster === opts.clusterId)) throw new Error(`the router lists no agent of ${opts.clusterId}`);
    return { base, secrets, close: () => forward.close() };
  } catch (err) {
    await forward.close();
    throw err;
  }
}
