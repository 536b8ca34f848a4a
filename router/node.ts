import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import { systemClock, type Clock } from '../shared/clock.js';
import { AppError } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { readNodeEnv } from '../shared/node-env.js';
import { runIfMain } from '../shared/node-main.js';
import { AGENT_CONNECT_PATH } from '../shared/tunnel/handshake.js';
import { composeRouter, createStore } from './compose.js';
import { loadRouterConfig, type RouterConfig } from './config.js';
import { DataPlane, proxySessionId, resolveTarget } from './data-plane/data-plane.js';
import { nodeDataPlane } from './data-plane/node.js';
import type { App } from './http/app.js';
import { createAgentEndpoint } from './node/agent-endpoint.js';
import { createRouterMetrics } from './node/metrics.js';
import { rejectUpgrade } from './node/upgrade.js';
import { webRequestInfo, type RequestInfo } from './public-url.js';
import { IoredisCommands } from './store/ioredis-commands.js';
import type { SessionStore } from './store/types.js';
import { InProcessHub } from './tunnel/in-process-hub.js';

export type RunningRouter = { url: string; port: number; server: Server; app: App; close(): Promise<void> };

/** How long a proxied request may use a session read earlier (see ProxySessionCache). */
const PROXY_CACHE_TTL_MS = 2000;

/** Composition root of the Node router: the shared core, plus Node's sockets and the in-process hub. */
export async function startRouter(config: RouterConfig, overrides: { logger?: Logger; clock?: Clock; store?: SessionStore } = {}): Promise<RunningRouter> {
  const clock = overrides.clock ?? systemClock;
  const logger = overrides.logger ?? createLogger({ level: config.logLevel, base: { component: 'router' } });
  const store = overrides.store ?? createStore(config, config.redis ? new IoredisCommands(config.redis) : null, clock);
  const metrics = createRouterMetrics();
  // The hub needs the service's handlers and the service needs the hub; handlers are bound lazily.
  const hub = new InProcessHub({
    clock,
    logger,
    handlersFor: (agent) => core.service.agentHandlers(agent),
    onAgentsChanged: (agents) => metrics.agentsConnected(agents.length),
  });
  const dataPlane = new DataPlane({ openStream: (to, spec, o) => hub.openStream(to, spec, o), clock });
  // Like the hub's handlers, the session look-up is bound to the service lazily.
  const resolve = (id: string, url: URL, info: RequestInfo) => resolveTarget((sid) => core.service.forProxy(sid), id, url, info, config.publicUrl);
  const core = composeRouter({
    config,
    store,
    hub,
    clock,
    logger,
    metrics,
    proxyCacheTtlMs: PROXY_CACHE_TTL_MS,
    onChange: (s, prev) => metrics.sessionChanged(s, prev),
    proxy: async (req, id) => dataPlane.fetch(await resolve(id, new URL(req.url), webRequestInfo(req)), req),
  });
  const nodePlane = nodeDataPlane(dataPlane, { mode: config.wsProxyMode, logger, resolve });
  const agentEndpoint = createAgentEndpoint({ hub, token: config.agentToken, clock, logger });

  const honoListener = getRequestListener(core.app.fetch);
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://router.invalid');
    const id = proxySessionId(url.pathname);
    if (id === null) return void honoListener(req, res);
    const started = performance.now();
    res.once('finish', () => metrics.observeRequest(req.method ?? 'GET', '/sessions/:id/proxy/*', res.statusCode, (performance.now() - started) / 1000));
    void nodePlane.handleRequest(req, res, id, url);
  });
  server.keepAliveTimeout = 65_000;
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://router.invalid');
    if (url.pathname === AGENT_CONNECT_PATH) return void agentEndpoint.handleUpgrade(req, socket, head);
    const id = proxySessionId(url.pathname);
    if (id !== null) return void nodePlane.handleUpgrade(req, socket, head, id, url);
    rejectUpgrade(socket, new AppError('NOT_FOUND', `no WebSocket endpoint at ${url.pathname}`));
  });
  const reaper = core.service.startReaper(5000);

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
    app: core.app,
    close: () =>
      (closing ??= (async () => {
        await reaper.stop();
        nodePlane.close();
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
