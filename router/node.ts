import { createHmac, hash, randomUUID } from 'node:crypto';
import { pathForm, sessionOfHost } from './session-hosts.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Context } from 'hono';
import { sleep, systemClock, type Clock } from '../shared/clock.js';
import { AppError } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { readNodeEnv } from '../shared/node-env.js';
import { runIfMain } from '../shared/node-main.js';
import { AGENT_CONNECT_PATH, welcome } from '../shared/tunnel/handshake.js';
import { composeRouter, createStore } from './compose.js';
import { nodeAssets } from './node/assets.js';
import { loadRouterConfig, type RouterConfig } from './config.js';
import { DataPlane, proxySessionId, targetResolver, type TargetResolver } from './data-plane/data-plane.js';
import { nodeDataPlane, nodeRequestInfo } from './data-plane/node.js';
import { isWebSocketUpgrade, type App } from './http/app.js';
import { createAgentEndpoint } from './node/agent-endpoint.js';
import { createRouterMetrics } from './node/metrics.js';
import { timedStore } from './store/timed.js';
import { rejectUpgrade } from './node/upgrade.js';
import { clientAddressOf, webRequestInfo, type PublicUrlPolicy, type RequestInfo } from './public-url.js';
import { IoredisCommands } from './store/ioredis-commands.js';
import { InProcessHub } from './tunnel/in-process-hub.js';
import { ReplicaRegistry } from './tunnel/replicas.js';

export type RunningRouter = { url: string; port: number; server: Server; app: App; close(): Promise<void> };

/** How long a proxied request may use a session read earlier (see ProxySessionCache). */
const PROXY_CACHE_TTL_MS = 2000;
/** How often a draining replica looks whether its proxied connections have ended. */
const DRAIN_POLL_MS = 100;

/** Composition root of the Node router: the shared core, plus Node's sockets and the in-process hub. */
export async function startRouter(config: RouterConfig, overrides: { logger?: Logger; clock?: Clock } = {}): Promise<RunningRouter> {
  const clock = overrides.clock ?? systemClock;
  const logger = overrides.logger ?? createLogger({ level: config.logLevel, base: { component: 'router' } });
  const redis = config.redis ? new IoredisCommands(config.redis) : null;
  const metrics = createRouterMetrics({
    clock,
    maxSessions: config.maxSessions,
    fleet: () => store.fleetCounts(),
    onFleetError: (err) => logger.warn("a metrics scrape answered without the fleet's session metrics", { err }),
  });
  const store = timedStore(createStore(config, redis, clock), (operation, seconds, ok) => {
    metrics.observeStore(operation, seconds, ok);
    logger.debug('store', { operation, ms: Math.round(seconds * 100_000) / 100, ok });
  });
  const replicaId = config.replicaId ?? `router-${randomUUID().slice(0, 8)}`;
  // Replicas sharing a Redis find each other there; agents hold a tunnel to each (see agent/tunnel-client.ts).
  const replicas = redis
    ? new ReplicaRegistry({
        redis,
        key: `${config.redisKeyPrefix}replicas`,
        id: replicaId,
        leaseMs: config.replicaLeaseMs,
        clock,
        logger,
        onChange: (ids) => hub.announceReplicas(ids),
      })
    : null;
  let draining = false;
  // The hub needs the service's handlers and the service needs the hub; handlers are bound lazily.
  const hub = new InProcessHub({
    clock,
    logger,
    handlersFor: (agent) => core.service.agentHandlers(agent),
    reportableBy: (agent, ids) => core.service.reportableBy(agent, ids),
    onAgentsChanged: (agents) => metrics.agentsConnected(agents.length),
    observe: { onRpc: metrics.observeRpc, onStreamClosed: metrics.observeStream },
  });
  const dataPlane = new DataPlane({ openStream: (to, spec, o) => hub.openStream(to, spec, o), clock });
  let boundPort = 0;
  const publicUrl: PublicUrlPolicy = {
    publicUrl: config.publicUrl,
    trustProxy: config.trustProxy,
    allowedHosts: config.allowedHosts,
    defaultHosts: () => new Set(ownHosts(config.host, boundPort)),
    fallbackHost: () => ownHosts(config.host, boundPort)[0]!,
  };
  // Hono on Node hands the IncomingMessage along; the app's own fetch (tests) has none.
  const requestInfo = (c: Context): RequestInfo => {
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    if (incoming) return nodeRequestInfo(incoming, config.trustProxy);
    return webRequestInfo(
      c.req.raw,
      clientAddressOf(undefined, () => c.req.header('x-forwarded-for'), config.trustProxy),
    );
  };
  const core = composeRouter({
    config,
    store,
    redis,
    hub,
    clock,
    logger,
    metrics,
    assets: nodeAssets(),
    publicUrl,
    requestInfo,
    crypto: { sha256: (text) => hash('sha256', text, 'hex'), hmacSha256: (secret, message) => createHmac('sha256', secret).update(message).digest() },
    addResponseHeaders: (c, headers) => {
      const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
      for (const k in headers) {
        if (outgoing) outgoing.setHeader(k, headers[k]!);
        else c.header(k, headers[k]!);
      }
    },
    proxyCacheTtlMs: PROXY_CACHE_TTL_MS,
    draining: () => draining,
    onChange: (s, prev) => metrics.sessionChanged(s, prev),
    proxy: async (req, id, info) => dataPlane.fetch(await resolve(id, new URL(req.url), info, isWebSocketUpgrade(req)), req),
  });
  // Made after the core (its service and access); the proxy port above only runs once requests arrive.
  const resolve: TargetResolver = targetResolver({ lookup: (sid) => core.service.forProxy(sid), access: core.access, publicUrl, sessionHosts: config.sessionHosts });
  /** A request's URL in the path form: a session host's is routed as `/sessions/:id/proxy/…`. */
  const requestUrl = (req: IncomingMessage): URL => {
    const url = new URL(req.url ?? '/', 'http://router.invalid');
    const hostId = sessionOfHost(req.headers.host, config.sessionHosts);
    return hostId ? pathForm(url, hostId) : url;
  };
  const nodePlane = nodeDataPlane(dataPlane, { mode: config.wsProxyMode, maxMessageBytes: config.maxWsMessageBytes, logger, resolve, trustProxy: config.trustProxy });
  const agentEndpoint = createAgentEndpoint({
    hub,
    tokens: config.agentTokens,
    clock,
    logger,
    replicaId,
    welcome: () => welcome({ id: replicaId, replicas: replicas?.replicas ?? [replicaId] }),
    admitting: () => !draining,
  });

  const honoListener = getRequestListener(core.app.fetch);
  const server = createServer((req, res) => {
    const url = requestUrl(req);
    const id = proxySessionId(url.pathname);
    if (id === null) return void honoListener(req, res);
    const started = performance.now();
    res.once('finish', () => metrics.observeRequest(req.method ?? 'GET', '/sessions/:id/proxy/*', res.statusCode, (performance.now() - started) / 1000));
    void nodePlane.handleRequest(req, res, id, url);
  });
  server.keepAliveTimeout = 65_000;
  server.on('upgrade', (req, socket, head) => {
    const url = requestUrl(req);
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
  boundPort = port;
  await replicas?.start();
  const url = `http://${ownHosts(config.host, port)[0]}`;
  const { auth } = config;
  logger.info('router listening', { url, replica: replicaId, store: config.redis ? 'redis' : 'memory', maxSessions: config.maxSessions, auth: auth.mode });
  if (auth.mode === 'none' && auth.reason === 'no key configured') {
    logger.warn(`no API key configured: listening on ${config.host} only, without authentication (set API_KEYS to listen elsewhere)`);
  } else if (auth.mode === 'none') {
    logger.warn('AUTH_MODE=none: every request is accepted without a key; an authenticating proxy must stand in front');
  } else {
    logger.info('API keys required', { envKeys: auth.envKeys.length, keyStore: config.redis ? 'redis' : 'none', metricsToken: Boolean(auth.metricsToken) });
  }

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    server,
    app: core.app,
    close: () =>
      (closing ??= (async () => {
        // Drain: readiness fails and new tunnels and proxied connections are refused (503, Retry-After),
        // the agents hear this replica is leaving, and open CDP connections get DRAIN_TIMEOUT_SEC to end.
        draining = true;
        nodePlane.drain();
        await replicas?.leave();
        await reaper.stop();
        if (hub.openStreams() > 0) {
          logger.info('router draining', { openStreams: hub.openStreams(), timeoutMs: config.drainTimeoutMs });
          const deadline = clock.now() + config.drainTimeoutMs;
          while (hub.openStreams() > 0 && clock.now() < deadline) await sleep(clock, DRAIN_POLL_MS);
        }
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

/** The names this router answers to (for cdpUrl when the request's Host is not one of them): the
 * listen address, and loopback names when it listens there or everywhere. The first is the fallback. */
function ownHosts(host: string, port: number): string[] {
  const wildcard = host === '0.0.0.0' || host === '::';
  const named = wildcard ? [] : [host.includes(':') ? `[${host}]` : host];
  const loopback = ['127.0.0.1', 'localhost', '[::1]'];
  return [...named, ...loopback].map((h) => `${h}:${port}`);
}

runIfMain(import.meta.url, () => startRouter(loadRouterConfig(readNodeEnv())));
