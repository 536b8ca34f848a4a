/**
 * Composition root of the router on the Workers runtime: the same Hono app as on Node, with the
 * session store on Upstash (REST) and agent tunnels held by one Durable Object per cluster.
 */
import { systemClock } from '../shared/clock.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { createApp, type App, type MetricsPort } from './http/app.js';
import { SessionService } from './sessions/service.js';
import { RedisSessionStore } from './store/redis.js';
import { UpstashCommands } from './store/upstash-commands.js';
import type { SessionStore } from './store/types.js';
import { loadEdgeConfig, type EdgeConfig, type WorkerEnv } from './worker/env.js';
import type { ExecutionContext } from './worker/platform.js';
import { RemoteHub } from './worker/remote-hub.js';

export { DirectoryObject } from './worker/directory-object.js';
export { TunnelHubObject } from './worker/hub-object.js';

const CLUSTER_ID = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Per isolate: configuration is validated once; clients, service and app serve every request. */
let isolate: { config: EdgeConfig; logger: Logger; app: App } | null = null;

function setup(env: WorkerEnv) {
  if (!isolate) {
    const config = loadEdgeConfig(env);
    const logger = createLogger({ level: config.logLevel, base: { component: 'edge-router' }, write: (l) => console.log(l) });
    const store = new RedisSessionStore({ commands: new UpstashCommands(config.upstash), keyPrefix: config.redisKeyPrefix, retentionSec: config.retentionSec });
    const hub = new RemoteHub(env);
    const service = new SessionService({
      store,
      hub,
      clock: systemClock,
      logger,
      limits: { maxSessions: config.maxSessions, defaultTimeoutSec: config.sessionTimeoutSec, defaultIdleTimeoutSec: config.sessionIdleTimeoutSec, startTimeoutMs: config.startTimeoutMs },
    });
    const app = createApp({ service, store, hub, clock: systemClock, logger, metrics: edgeMetrics(store, hub), config: { maxBodyBytes: config.maxBodyBytes, publicUrl: config.publicUrl } });
    isolate = { config, logger, app };
  }
  return isolate;
}

/** Prometheus text on the edge comes from the shared state, not from one isolate's counters. */
function edgeMetrics(store: SessionStore, hub: RemoteHub): MetricsPort {
  return {
    contentType: 'text/plain; version=0.0.4; charset=utf-8',
    observeRequest: () => {},
    render: async () => {
      const [active, agents] = await Promise.all([store.activeCount(), hub.agents()]);
      return [
        '# HELP bso_sessions_active Sessions holding a slot (pending or running), from the store.',
        '# TYPE bso_sessions_active gauge',
        `bso_sessions_active ${active}`,
        '# HELP bso_agents_connected Agent tunnels held by the cluster hubs.',
        '# TYPE bso_agents_connected gauge',
        `bso_agents_connected ${agents.length}`,
        '',
      ].join('\n');
    },
  };
}

async function sha256(s: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(s)));
}

/** Compares digests so the time taken says nothing about the token. */
async function tokensEqual(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([sha256(given), sha256(expected)]);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

const jsonError = (status: number, code: string, message: string) => Response.json({ error: { code, message } }, { status });

export default {
  async fetch(req: Request, env: WorkerEnv, ctx: ExecutionContext): Promise<Response> {
    const { config, logger, app } = setup(env);
    const url = new URL(req.url);
    if (url.pathname === '/agent/connect') {
      const token = /^Bearer\s+(.+)$/i.exec(req.headers.get('authorization') ?? '')?.[1]?.trim();
      if (!token || !(await tokensEqual(token, config.agentToken))) {
        logger.warn('agent rejected: bad token', { hasToken: Boolean(token) });
        return jsonError(401, 'UNAUTHORIZED', 'agent token missing or wrong');
      }
      const cluster = url.searchParams.get('cluster') ?? '';
      if (!CLUSTER_ID.test(cluster)) return jsonError(400, 'BAD_REQUEST', 'the agent must name its cluster (?cluster=)');
      if (req.headers.get('upgrade')?.toLowerCase() !== 'websocket') return jsonError(426, 'BAD_REQUEST', 'WebSocket upgrade required');
      const forward = new Request('https://hub/agent', req);
      forward.headers.set('x-bso-cluster', cluster);
      return env.HUB.get(env.HUB.idFromName(cluster)).fetch(forward);
    }
    return app.fetch(req, env, ctx as never);
  },
};
