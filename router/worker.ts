/**
 * Composition root of the router on the Workers runtime: the shared core (router/compose.ts) with the
 * session store on Upstash (REST) and agent tunnels held by one Durable Object per cluster.
 */
import { systemClock } from '../shared/clock.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { admitAgent, AGENT_CONNECT_PATH } from '../shared/tunnel/handshake.js';
import { composeRouter, type RouterCore } from './compose.js';
import { targetResolver } from './data-plane/data-plane.js';
import { pathForm, sessionOfHost } from './session-hosts.js';
import { errorJson } from './http/errors.js';
import { isWebSocketUpgrade, type MetricsPort } from './http/app.js';
import { renderFleetMetrics } from './http/fleet-metrics.js';
import type { SessionStore } from './store/types.js';
import { edgePublicUrl, edgeRedis, edgeRequestInfo, loadEdgeConfig, type EdgeConfig, type WorkerEnv } from './worker/env.js';
import type { ExecutionContext } from './worker/platform.js';
import { workerAssets } from './worker/assets.js';
import { RemoteHub } from './worker/remote-hub.js';

export { DirectoryObject } from './worker/directory-object.js';
export { TunnelHubObject } from './worker/hub-object.js';

/** Per isolate: configuration is validated once; clients, service and app serve every request. */
let isolate: { config: EdgeConfig; logger: Logger; core: RouterCore } | null = null;

function setup(env: WorkerEnv) {
  if (!isolate) {
    const config = loadEdgeConfig(env);
    const logger = createLogger({ level: config.logLevel, base: { component: 'edge-router' }, write: (l) => console.log(l) });
    const { redis, store } = edgeRedis(config, systemClock);
    const hub = new RemoteHub(env);
    const publicUrl = edgePublicUrl(config);
    const core: RouterCore = composeRouter({
      config,
      store,
      redis,
      hub,
      clock: systemClock,
      logger,
      metrics: edgeMetrics(store, hub),
      assets: workerAssets(),
      publicUrl,
      requestInfo: (c) => edgeRequestInfo(c.req.raw),
      // Status changes land in the cluster hubs, not here, so a cached session could never be invalidated.
      proxyCacheTtlMs: 0,
      proxy: async (req, id, info) => hub.forward(await resolve(id, new URL(req.url), info, isWebSocketUpgrade(req)), req),
    });
    // Made after the core (its service and access); the proxy port only runs once requests arrive.
    const resolve = targetResolver({ lookup: (sid) => core.service.forProxy(sid), access: core.access, publicUrl, sessionHosts: config.sessionHosts });
    isolate = { config, logger, core };
  }
  return isolate;
}

/** Prometheus text on the edge comes from the shared state, not from one isolate's counters. */
function edgeMetrics(store: SessionStore, hub: RemoteHub): MetricsPort {
  return {
    contentType: 'text/plain; version=0.0.4; charset=utf-8',
    observeRequest: () => {},
    render: async () => {
      // The fleet's numbers are a read of their own: a failure there still answers the rest.
      const [active, agents, fleet] = await Promise.all([store.activeCount(), hub.agents(), store.fleetCounts().catch(() => null)]);
      return (
        (fleet ? renderFleetMetrics(fleet) : '') +
        [
          '# HELP bso_sessions_active Sessions holding a slot (pending or running), from the store.',
          '# TYPE bso_sessions_active gauge',
          `bso_sessions_active ${active}`,
          '# HELP bso_agents_connected Agent tunnels held by the cluster hubs.',
          '# TYPE bso_agents_connected gauge',
          `bso_agents_connected ${agents.length}`,
          '',
        ].join('\n')
      );
    },
  };
}

export default {
  async fetch(req: Request, env: WorkerEnv, ctx: ExecutionContext): Promise<Response> {
    const { config, logger, core } = setup(env);
    const url = new URL(req.url);
    if (url.pathname === AGENT_CONNECT_PATH) {
      let cluster: string;
      try {
        ({ cluster } = await admitAgent({ authorization: req.headers.get('authorization'), upgrade: req.headers.get('upgrade'), url }, config.agentTokens));
      } catch (err) {
        logger.warn('agent rejected', { reason: (err as Error).message });
        return errorJson(err);
      }
      const forward = new Request('https://hub/agent', req);
      forward.headers.set('x-bso-cluster', cluster);
      return env.HUB.get(env.HUB.idFromName(cluster)).fetch(forward);
    }
    // A session host's request stands for the path form; the app routes that.
    const hostId = sessionOfHost(req.headers.get('host') ?? url.host, config.sessionHosts);
    return core.app.fetch(hostId ? new Request(pathForm(url, hostId), req) : req, env, ctx as never);
  },
};
