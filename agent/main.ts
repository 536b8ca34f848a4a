import { randomUUID } from 'node:crypto';
import { startLoop, systemClock, type Clock } from '../shared/clock.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { readNodeEnv } from '../shared/node-env.js';
import { runIfMain } from '../shared/node-main.js';
import { loadAgentConfig, type AgentConfig } from './config.js';
import { checkBrowsers } from './health.js';
import { createAgentMetrics, serveMetrics, type AgentMetrics } from './metrics.js';
import { createProxyHandler } from './proxy.js';
import { Reporter } from './reporter.js';
import { installBrowserFirewall } from './runtime/browser-firewall.js';
import { lookupBrowserUser, sweepStaleProfiles } from './runtime/chromium.js';
import { LocalChromiumRuntime } from './runtime/local.js';
import type { KubeConfig } from '@kubernetes/client-node';
import type { ClusterJanitorDeps } from './runtime/kubernetes/janitor.js';
import type { BrowserRuntime } from './runtime/types.js';
import { SessionManager } from './sessions.js';
import { TunnelClient } from './tunnel-client.js';

export type RunningAgent = {
  metricsUrl: string;
  sessions: SessionManager;
  runtime: BrowserRuntime;
  tunnel: TunnelClient;
  close(): Promise<void>;
};

/** Composition root of the agent: runtime, sessions, proxy, tunnel, metrics, background loops. */
export async function startAgent(config: AgentConfig, overrides: { logger?: Logger; clock?: Clock; runtime?: BrowserRuntime } = {}): Promise<RunningAgent> {
  const clock = overrides.clock ?? systemClock;
  const logger = overrides.logger ?? createLogger({ level: config.logLevel, base: { component: 'agent', node: config.nodeName } });
  const metrics = createAgentMetrics();
  const created = overrides.runtime ? { runtime: overrides.runtime, kc: null, capacity: undefined } : await createRuntime(config, clock, logger, metrics);
  const { runtime } = created;
  await runtime.init?.();
  // Closures below reach `tunnel` only after it is constructed.
  const reporter = new Reporter({ peer: () => tunnel.current, logger });
  const sessions = new SessionManager({
    runtime,
    clock,
    logger,
    metrics,
    nodeName: config.nodeName,
    report: (r) => reporter.report({ ...r, active: sessions.active }),
    onLoadChanged: (active) => tunnel.announceLoad(active),
  });
  const proxy = createProxyHandler({ sessions, clock, logger, maxWsMessageBytes: config.maxWsMessageBytes, maxWebSocketsPerSession: config.maxDevtoolsConnections });

  const tunnel: TunnelClient = new TunnelClient({
    url: config.routerUrl,
    token: config.token,
    hello: {
      clusterId: config.clusterId,
      nodeName: config.nodeName,
      agentId: `${config.nodeName}/${randomUUID().slice(0, 8)}`,
      runtime: runtime.name,
      // How many sessions it can hold: LOCAL_MAX_BROWSERS, or what its Kubernetes node's resources fit.
      ...(created.capacity !== undefined ? { capacity: created.capacity } : {}),
    },
    clock,
    logger,
    handlers: {
      // Each answer carries the agent's load after it, so the router places on fresh numbers.
      'session.start': async ({ session, publicUrl, sessionUrl, traceparent }) => ({
        ...(await sessions.start(session, { publicUrl, sessionUrl, traceparent })),
        active: sessions.active,
      }),
      'session.stop': async ({ id, reason }) => ({ stopped: await sessions.stop(id, reason), active: sessions.active }),
      'session.release': async ({ id }) => sessions.release(id),
    },
    onStreamOpen: (stream, spec) => proxy.onStreamOpen(stream, spec),
    onConnected: (peer) => {
      void (async () => {
        await reporter.flush();
        await sync(peer);
      })().catch((err) => logger.warn('post-connect sync failed', { err }));
    },
  });
  // Browsers that outlived a previous agent (Jobs) are adopted before the router hears from us, so
  // the first sync already lists them.
  for (const session of (await runtime.recover?.()) ?? []) void sessions.adopt(session);
  tunnel.start();

  /** Reconcile with the router (any replica: they share the store): it stops what it no longer wants and
   * rebuilds what its store lost. */
  async function sync(peer = tunnel.current): Promise<void> {
    if (!peer) return;
    const { stop } = await peer.call('agent.sync', { running: sessions.ids(), snapshots: sessions.snapshots() }, 10_000);
    await Promise.all(stop.map((id) => sessions.stop(id, 'orphaned')));
  }
  const syncLoop = startLoop({ clock, intervalMs: config.syncIntervalMs, tick: sync, onError: (err) => logger.warn('sync failed', { err }) });
  const idleLoop = sessions.startIdleLoop(1000);
  const healthLoop = startLoop({
    clock,
    intervalMs: config.healthIntervalMs,
    tick: () => checkBrowsers({ sessions, clock, peers: tunnel.peers, timeoutMs: 2000 }),
    onError: (err) => logger.warn('health pass failed', { err }),
  });
  // Kubernetes: the agents of a cluster elect one leader, which cleans up after the others.
  const leadership = created.kc
    ? await startLeadership({
        kc: created.kc,
        config,
        clock,
        logger,
        sync: (params) => {
          const peer = tunnel.current;
          if (!peer) throw new Error('no tunnel to the router');
          return peer.call('cluster.sync', params, 30_000);
        },
      })
    : null;
  const metricsServer = await serveMetrics(metrics, config.metricsHost, config.metricsPort, () => tunnel.current !== null, config.metricsPortFallback);
  if (metricsServer.tookAnotherPort) logger.warn(`metrics port ${config.metricsPort} is taken (another agent on this machine?): serving metrics on port ${metricsServer.port}`);
  const shownHost = config.metricsHost === '0.0.0.0' ? '127.0.0.1' : config.metricsHost;
  logger.info('agent started', { cluster: config.clusterId, runtime: runtime.name, router: config.routerUrl, metricsPort: metricsServer.port });

  let closing: Promise<void> | undefined;
  return {
    metricsUrl: `http://${shownHost}:${metricsServer.port}/metrics`,
    sessions,
    runtime,
    tunnel,
    close: () =>
      (closing ??= (async () => {
        await Promise.all([idleLoop.stop(), healthLoop.stop(), syncLoop.stop(), leadership?.stop()]);
        await sessions.shutdown();
        await runtime.stopAll();
        await tunnel.stop();
        await runtime.close?.();
        proxy.close();
        await metricsServer.close();
        logger.info('agent stopped');
      })()),
  };
}

/** The Kubernetes client is loaded only by agents that use it. */
async function createRuntime(
  config: AgentConfig,
  clock: Clock,
  logger: Logger,
  metrics: AgentMetrics,
): Promise<{ runtime: BrowserRuntime; kc: KubeConfig | null; capacity?: number }> {
  if (config.runtime === 'kubernetes') {
    const { KubeConfig } = await import('@kubernetes/client-node');
    const { KubernetesRuntime } = await import('./runtime/kubernetes/runtime.js');
    const { kubeconfig, scheduleTimeoutMs, leadership: _leadership, ...settings } = config.kubernetes;
    const kc = new KubeConfig();
    if (kubeconfig) kc.loadFromFile(kubeconfig);
    else kc.loadFromCluster();
    const runtime = new KubernetesRuntime({
      kc,
      clock,
      logger,
      scheduleTimeoutMs,
      startTimeoutMs: config.startTimeoutMs,
      settings: { ...settings, cluster: config.clusterId, node: config.nodeName },
      warmPool: { settings: config.warmPool, metrics: metrics.warmPool },
    });
    metrics.readWarmPool(() => runtime.warmPool());
    let capacity: number | undefined;
    try {
      capacity = await runtime.capacity();
      logger.info('node capacity', { node: config.nodeName, sessions: capacity });
    } catch (err) {
      logger.warn('cannot read this node: no capacity stated, the scheduler alone judges its room', { node: config.nodeName, err });
    }
    return { runtime, kc, capacity };
  }
  if (config.ignoredVariables.length) {
    logger.warn(`AGENT_RUNTIME=local ignores these Kubernetes settings: ${config.ignoredVariables.join(', ')} (set AGENT_RUNTIME=kubernetes to use them)`, {
      variables: config.ignoredVariables,
    });
  }
  if (config.noSandbox) logger.warn('CHROMIUM_NO_SANDBOX=true: browsers run without their sandbox');
  const user = config.chromiumUser ? await lookupBrowserUser(config.chromiumUser) : undefined;
  const swept = await sweepStaleProfiles();
  if (swept.length) logger.warn('removed profiles of browsers that ended with an earlier agent', { profiles: swept.length });
  if (!user) logger.warn("not root: browsers run as this agent's own account and can reach whatever it can (its ports, loopback services)");
  else if (config.firewall) await installBrowserFirewall(user.uid);
  else logger.warn(`CHROMIUM_FIREWALL=false: browsers (${user.name}) can reach this host's loopback services`);
  const runtime = new LocalChromiumRuntime({
    executablePath: config.chromiumPath,
    noSandbox: config.noSandbox,
    user,
    maxConnections: config.maxDevtoolsConnections,
    maxBrowsers: config.localMaxBrowsers,
    startTimeoutMs: config.startTimeoutMs,
    logger,
    clock,
    warmPool: { settings: config.warmPool, metrics: metrics.warmPool },
  });
  metrics.readWarmPool(() => runtime.warmPool());
  return { runtime, kc: null, capacity: config.localMaxBrowsers };
}

/** The cluster's leader election and the cleanup its leader runs (loaded only by Kubernetes agents). */
async function startLeadership(deps: { kc: KubeConfig; config: AgentConfig; clock: Clock; logger: Logger; sync: ClusterJanitorDeps['sync'] }): Promise<{ stop(): Promise<void> }> {
  const { BatchV1Api, CoordinationV1Api } = await import('@kubernetes/client-node');
  const { LeaderElection } = await import('./runtime/kubernetes/leader.js');
  const { ClusterJanitor } = await import('./runtime/kubernetes/janitor.js');
  const { config, clock, logger } = deps;
  const k = config.kubernetes.leadership;
  const coordination = deps.kc.makeApiClient(CoordinationV1Api);
  const election = new LeaderElection({
    api: coordination,
    namespace: k.namespace,
    name: `bso-leader-${config.clusterId}`,
    identity: `${config.nodeName}_${randomUUID().slice(0, 8)}`,
    leaseDurationMs: k.leaseMs,
    clock,
    logger,
  });
  const janitor = new ClusterJanitor({
    batch: deps.kc.makeApiClient(BatchV1Api),
    coordination,
    namespace: config.kubernetes.namespace,
    cluster: config.clusterId,
    nodeLostAfterMs: k.nodeLostMs,
    leading: () => election.isLeader,
    sync: deps.sync,
    clock,
    logger,
  });
  election.start();
  const loop = startLoop({ clock, intervalMs: k.cleanupIntervalMs, tick: () => janitor.pass(), onError: (err) => logger.warn('cluster cleanup pass failed', { err }) });
  return {
    stop: async () => {
      await loop.stop();
      await election.stop();
    },
  };
}

runIfMain(import.meta.url, () => startAgent(loadAgentConfig(readNodeEnv(), process.getuid?.() === 0)));
