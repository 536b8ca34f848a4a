import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { systemClock, type Clock } from '../shared/clock.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { readNodeEnv } from '../shared/node-env.js';
import { runIfMain } from '../shared/node-main.js';
import { loadRouterConfig, type RouterConfig } from './config.js';
import { createApp, type App } from './http/app.js';
import { AGENT_PATH, createAgentEndpoint } from './node/agent-endpoint.js';
import { createRouterMetrics } from './node/metrics.js';
import { rejectUpgrade } from './node/upgrade.js';
import { createNodeHttpProxy } from './node/http-proxy.js';
import { createWsProxy, isProxyPath, proxySessionId } from './node/ws-proxy.js';
import { SessionService } from './sessions/service.js';
import { MemorySessionStore } from './store/memory.js';
import { IoredisCommands } from './store/ioredis-commands.js';
import { RedisSessionStore } from './store/redis.js';
import type { SessionStore } from './store/types.js';
import { InProcessHub } from './tunnel/in-process-hub.js';

export type RunningRouter = { url: string; port: number; server: Server; app: App; close(): Promise<void> };

/** Composition root of the Node router: wires store, hub, service and HTTP, then listens. */
export async function startRouter(config: RouterConfig, overrides: { logger?: Logger; clock?: Clock; store?: SessionStore } = {}): Promise<RunningRouter> {
  const clock = overrides.clock ?? systemClock;
  const logger = overrides.logger ?? createLogger({ level: config.logLevel, base: { component: 'router' } });
  const store: SessionStore =
    overrides.store ??
    (config.redis
      ? new RedisSessionStore({ commands: new IoredisCommands(config.redis), keyPrefix: config.redisKeyPrefix, retentionSec: config.retentionSec })
      : new MemorySessionStore({ retentionSec: config.retentionSec, now: () => clock.now() }));
  const metrics = createRouterMetrics();
  // The hub needs the service's handlers and the service needs the hub; handlers are bound lazily.
  const hub = new InProcessHub({
    clock,
    logger,
    handlersFor: (agent) => service.agentHandlers(agent),
    onAgentsChanged: (agents) => metrics.agentsConnected(agents.length),
  });
  const service: SessionService = new SessionService({
    store,
    hub,
    clock,
    logger,
    limits: {
      maxSessions: config.maxSessions,
      defaultTimeoutSec: config.sessionTimeoutSec,
      defaultIdleTimeoutSec: config.sessionIdleTimeoutSec,
      startTimeoutMs: config.startTimeoutMs,
    },
    onChange: (s, prev) => metrics.sessionChanged(s, prev),
  });
  const app = createApp({ service, store, hub, clock, logger, metrics, config: { maxBodyBytes: config.maxBodyBytes, publicUrl: config.publicUrl } });
  const agentEndpoint = createAgentEndpoint({ hub, token: config.agentToken, clock, logger });
  const wsProxy = createWsProxy({ service, hub, clock, logger, mode: config.wsProxyMode });

  const honoListener = getRequestListener(app.fetch);
  const nodeProxy = createNodeHttpProxy({ service, hub, clock, logger, publicUrl: config.publicUrl });
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://router.invalid');
    const id = proxySessionId(url.pathname);
    if (id === null) return void honoListener(req, res);
    const started = performance.now();
    res.once('finish', () => metrics.observeRequest(req.method ?? 'GET', '/sessions/:id/proxy/*', res.statusCode, (performance.now() - started) / 1000));
    void nodeProxy(req, res, id, url);
  });
  server.keepAliveTimeout = 65_000;
  server.on('upgrade', (req, socket, head) => {
    const pathname = new URL(req.url ?? '/', 'http://router.invalid').pathname;
    if (pathname === AGENT_PATH) return agentEndpoint.handleUpgrade(req, socket, head);
    if (isProxyPath(pathname)) return void wsProxy.handleUpgrade(req, socket, head);
    rejectUpgrade(socket, 404, 'NOT_FOUND', `no WebSocket endpoint at ${pathname}`);
  });
  const reaper = service.startReaper(5000);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  const url = `http://${shownHost}:${port}`;
  logger.info('router listening', { url, store: config.redis ? 'redis' : 'memory', maxSessions: config.maxSessions });

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    server,
    app,
    close: () =>
      (closing ??= (async () => {
        await reaper.stop();
        wsProxy.close();
        hub.closeAll('router shutting down');
        agentEndpoint.close();
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
        await store.close();
        logger.info('router stopped');
      })()),
  };
}

runIfMain(import.meta.url, () => startRouter(loadRouterConfig(readNodeEnv())));
