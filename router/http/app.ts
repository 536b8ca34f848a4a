import { OpenAPIHono } from '@hono/zod-openapi';
import { uiUrlOf, type SessionHosts } from '../session-hosts.js';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { stream } from 'hono/streaming';
import { sha256Hex } from '../../shared/crypto.js';
import { withDeadline, type Clock } from '../../shared/clock.js';
import { AppError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { isTerminal } from '../../shared/session.js';
import { parseTraceparent } from '../../shared/trace.js';
import type { Access } from '../auth/access.js';
import type { Caller } from '../auth/keys.js';
import { proxySessionId } from '../data-plane/data-plane.js';
import { publicBases, type PublicUrlPolicy, type RequestInfo } from '../public-url.js';
import type { QueueMetrics, QueueWait, SessionService } from '../sessions/service.js';
import type { SessionStore } from '../store/types.js';
import type { TunnelHub } from '../tunnel/hub.js';
import { ASSET_PATHS, registerAssetRoutes, type BundledAssets } from './docs.js';
import { errorBody, errorResponse, toAppError } from './errors.js';
import {
  createSessionRoute,
  deleteSessionRoute,
  releaseSessionRoute,
  getSessionRoute,
  healthRoute,
  listSessionsRoute,
  livezRoute,
  readyzRoute,
  sessionStatusRoute,
} from './routes.js';
import { toView } from './views.js';

export type MetricsPort = {
  contentType: string;
  render(): Promise<string>;
  observeRequest(method: string, route: string, status: number, seconds: number): void;
} & Partial<QueueMetrics>;

/** Carries one proxied request (HTTP, or a WebSocket upgrade where the runtime takes it this way) to
 * the browser of session `id`: the runtime's data plane, which admits it first (token or key). */
export type ProxyPort = (req: Request, id: string, info: RequestInfo) => Promise<Response>;

export const isWebSocketUpgrade = (req: Request): boolean => req.headers.get('upgrade')?.toLowerCase() === 'websocket';

export type AppDeps = {
  service: SessionService;
  store: SessionStore;
  hub: TunnelHub;
  clock: Clock;
  logger: Logger;
  metrics: MetricsPort;
  proxy: ProxyPort;
  /** Swagger UI's files and the DevTools protocol description, from the packages the router ships with. */
  assets: BundledAssets;
  access: Access;
  publicUrl: PublicUrlPolicy;
  /** The runtime's view of a request (its client address in particular). */
  requestInfo: (c: Context) => RequestInfo;
  /** Adds headers to whatever response the request gets. Default: Hono's `c.header`; Node sets them
   * on its own response object (Hono's headers would take every response off its fast path). */
  addResponseHeaders?: (c: Context, headers: Record<string, string>) => void;
  config: { maxBodyBytes: number; allowedOrigins: readonly string[]; sessionHosts?: SessionHosts };
  /** True while this replica shuts down: readiness fails so the load balancer sends no new requests. */
  draining?: () => boolean;
};

/** Routes anyone may call: liveness, the API's own description and the files its pages need. */
const PUBLIC_PATHS = new Set<string>(['/livez', '/readyz', '/openapi.json', ...ASSET_PATHS]);

const DEFAULT_WAIT_SEC = 60;
const NDJSON = 'application/x-ndjson';
const STORE_PING_TIMEOUT_MS = 2000;

/** The runtime-neutral HTTP app: web-standard Request in, Response out. Entry points only add sockets. */
export function createApp(deps: AppDeps) {
  const { service, hub, logger, clock, config, access } = deps;
  const addResponseHeaders = deps.addResponseHeaders ?? ((c: Context, headers: Record<string, string>) => Object.entries(headers).forEach(([k, v]) => c.header(k, v)));
  const app = new OpenAPIHono<{ Variables: { caller: Caller } }>({
    defaultHook: (result) => {
      if (!result.success) {
        const issues = result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message, code: i.code }));
        throw new AppError('VALIDATION_FAILED', `invalid ${result.target}: ${issues[0]?.path || '(root)'}: ${issues[0]?.message}`, { details: { issues } });
      }
    },
  });

  app.onError((err, c) => errorResponse(c, err, logger));
  app.notFound((c) => errorResponse(c, new AppError('NOT_FOUND', `no route for ${c.req.method} ${c.req.path}`), logger));

  app.use('*', async (c, next) => {
    const started = performance.now();
    await next();
    const route = c.req.routePath || 'unmatched';
    deps.metrics.observeRequest(c.req.method, route, c.res.status, (performance.now() - started) / 1000);
  });

  if (config.allowedOrigins.length) {
    app.use(
      '*',
      cors({ origin: [...config.allowedOrigins], allowHeaders: ['authorization', 'x-api-key', 'content-type'], exposeHeaders: ['ratelimit', 'ratelimit-policy', 'retry-after'] }),
    );
  }

  // Every route but the public ones and the proxy (whose runtime adapters admit it) needs a key.
  app.use('*', async (c, next) => {
    const path = c.req.path;
    if (PUBLIC_PATHS.has(path) || proxySessionId(path) !== null) return next();
    const info = deps.requestInfo(c);
    if (path === '/metrics') {
      access.checkOrigin(info, false);
      await access.admitMetrics(info);
      return next();
    }
    const creating = c.req.method === 'POST' && path === '/sessions';
    const { caller, headers } = await access.admit(info, creating ? 'create' : 'api');
    addResponseHeaders(c, headers);
    if (creating) requireJsonBody(c);
    c.set('caller', caller);
    return next();
  });

  const bases = (c: Context) => publicBases(deps.requestInfo(c), deps.publicUrl);
  const view = async (c: Context, s: Parameters<typeof toView>[0], b = bases(c)) => toView(s, b, await access.connectToken(s), config.sessionHosts);

  const limitBody = bodyLimit({
    maxSize: config.maxBodyBytes,
    onError: () => {
      throw new AppError('PAYLOAD_TOO_LARGE', `request body exceeds ${config.maxBodyBytes} bytes`);
    },
  });
  app.use('/sessions', limitBody);
  app.use('/sessions/:id', limitBody);
  app.use('/sessions/:id/release', limitBody);

  app.openapi(createSessionRoute, async (c) => {
    const query = c.req.valid('query');
    const body = c.req.valid('json') ?? {};
    const wait = query.wait === 'true' ? { waitMs: (query.waitTimeout ?? DEFAULT_WAIT_SEC) * 1000 } : null;
    const b = bases(c);
    // A session host that serves the browser API is where an image's own URLs should point (its cookie authenticates them there).
    const hosts = config.sessionHosts;
    const sessionUrlOf = hosts?.target === 'api' ? (id: string) => uiUrlOf(b.http, id, hosts) : undefined;
    const traceparent = parseTraceparent(c.req.header('traceparent'));
    const context = { reach: { publicUrl: b.http, sessionUrlOf }, traceparent };
    if (query.queue === undefined) {
      const session = await service.create(body, c.get('caller'), wait, backgroundOf(c), context);
      return c.json(await view(c, session, b), 201);
    }
    // Queued: waits for a slot, then for the start, as wait=true does.
    const queue = await queueWaitOf(c.get('caller'), query.queue, c.req.valid('header')['idempotency-key'], c.req.raw.signal);
    const queuedWait = wait ?? { waitMs: DEFAULT_WAIT_SEC * 1000 };
    if (!(c.req.header('accept') ?? '').includes(NDJSON)) {
      const session = await service.createQueued(body, c.get('caller'), queue, queuedWait, backgroundOf(c), context);
      return c.json(await view(c, session, b), 201);
    }
    // Progress as it happens, one JSON object per line: {"queue":{"position":n}} on each change, then
    // {"session":{…}} or {"error":{…}}. The status is 200: it is sent before the outcome is known.
    c.header('content-type', `${NDJSON}; charset=UTF-8`);
    c.header('cache-control', 'no-store');
    const progress = stream(c, async (out) => {
      const left = new AbortController();
      out.onAbort(() => left.abort(new Error('the client left')));
      queue.signal = AbortSignal.any([queue.signal, left.signal].filter((x): x is AbortSignal => x !== undefined));
      const line = (value: unknown) => out.write(`${JSON.stringify(value)}\n`);
      queue.onPosition = (position) => void line({ queue: { position } }).catch(() => {});
      try {
        const session = await service.createQueued(body, c.get('caller'), queue, queuedWait, backgroundOf(c), context);
        await line({ session: await view(c, session, b) });
      } catch (err) {
        if (!left.signal.aborted) await line(errorBody(toAppError(err)));
      }
    });
    // A stream is a plain Response to the typed routes.
    return progress as never;
  });

  /** The queue's ticket: from the client's Idempotency-Key (hashed with its key id, so keys never share one), or new. */
  const queueWaitOf = async (caller: Caller, seconds: number, idempotencyKey: string | undefined, signal: AbortSignal): Promise<QueueWait> => ({
    waitMs: seconds * 1000,
    ticket: idempotencyKey === undefined ? crypto.randomUUID() : await sha256Hex(`${caller.keyId}\n${idempotencyKey}`),
    resumable: idempotencyKey !== undefined,
    signal,
  });

  app.openapi(listSessionsRoute, async (c) => {
    const q = c.req.valid('query');
    const page = await service.list({ status: q.status, cursor: q.cursor, limit: q.limit ?? 50 }, c.get('caller'));
    const b = bases(c);
    return c.json({ items: await Promise.all(page.items.map((s) => view(c, s, b))), nextCursor: page.nextCursor }, 200);
  });

  app.openapi(getSessionRoute, async (c) => {
    const s = await service.require(c.req.valid('param').id, c.get('caller'));
    return c.json(await view(c, s), 200);
  });

  app.openapi(sessionStatusRoute, async (c) => {
    const s = await service.require(c.req.valid('param').id, c.get('caller'));
    const placement = { cluster: s.cluster, node: s.node };
    const { connected, health } = isTerminal(s.status) ? { connected: false, health: null } : await hub.observe(placement, s.id);
    return c.json(
      {
        id: s.id,
        status: s.status,
        failureReason: s.failureReason,
        expiresAt: s.expiresAt,
        health: {
          agentConnected: connected,
          lastReportAt: health?.checkedAt ?? null,
          browserReachable: s.status === 'running' ? (health?.reachable ?? null) : null,
        },
      },
      200,
    );
  });

  app.openapi(deleteSessionRoute, async (c) => {
    const s = await service.delete(c.req.valid('param').id, c.get('caller'));
    return c.json(await view(c, s), 200);
  });

  app.openapi(releaseSessionRoute, async (c) => {
    const s = await service.release(c.req.valid('param').id, c.get('caller'));
    return c.json(await view(c, s), 200);
  });

  /** Store reachability, bounded: a dead store is an answer, not a hung probe. */
  const pingStore = async (): Promise<{ ok: boolean; latencyMs: number | null; error?: string }> => {
    const started = performance.now();
    try {
      await withDeadline(clock, deps.store.ping(), STORE_PING_TIMEOUT_MS, {
        error: () => new AppError('STORE_UNAVAILABLE', `the session store did not answer within ${STORE_PING_TIMEOUT_MS} ms`),
      });
      return { ok: true, latencyMs: Math.round((performance.now() - started) * 100) / 100 };
    } catch (err) {
      return { ok: false, latencyMs: null, error: (err as Error).message };
    }
  };

  // Probes: liveness never depends on the store (a Redis outage must not restart every router and
  // drop its open CDP sockets); readiness does. Neither says more than ok or not.
  app.openapi(livezRoute, (c) => c.json({ status: 'ok' as const }, 200));
  app.openapi(readyzRoute, async (c) => {
    if (deps.draining?.()) return c.json({ status: 'draining' as const }, 503);
    const ok = (await pingStore()).ok;
    return ok ? c.json({ status: 'ok' as const }, 200) : c.json({ status: 'degraded' as const }, 503);
  });

  app.openapi(healthRoute, async (c) => {
    const store = await pingStore();
    const agents = (await hub.agents()).map((a) => ({ cluster: a.cluster, node: a.node, runtime: a.runtime, connectedAt: a.connectedAt }));
    const body = { status: store.ok ? ('ok' as const) : ('degraded' as const), store, agents };
    return c.json(body, store.ok ? 200 : 503);
  });

  app.get('/metrics', async (c) => c.body(await deps.metrics.render(), 200, { 'content-type': deps.metrics.contentType }));

  app.all('/sessions/:id/proxy/*', (c) => deps.proxy(c.req.raw, c.req.param('id'), deps.requestInfo(c)));
  app.all('/sessions/:id/proxy', (c) => deps.proxy(c.req.raw, c.req.param('id'), deps.requestInfo(c)));

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', { type: 'http', scheme: 'bearer', description: 'An API key: `Authorization: Bearer <key>`' });
  app.openAPIRegistry.registerComponent('securitySchemes', 'apiKeyHeader', { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'An API key in `X-API-Key`' });
  app.openAPIRegistry.registerComponent('securitySchemes', 'sessionToken', {
    type: 'apiKey',
    in: 'query',
    name: 'token',
    description: "A session's own token (in its `cdpUrl`/`proxyUrl`): opens that session's proxy only",
  });
  app.doc('/openapi.json', {
    openapi: '3.0.0',
    info: { title: 'Browser session orchestrator', version: '0.1.0', description: 'Isolated headless browsers over REST, driven through a CDP proxy.' },
    security: [{ bearerAuth: [] }, { apiKeyHeader: [] }],
  });
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/sessions/{id}/proxy/{path}',
    summary: "HTTP or WebSocket (CDP) traffic to the session's browser; any method. `/ui/...` goes to the UI container.",
    security: [{ sessionToken: [] }, { bearerAuth: [] }, { apiKeyHeader: [] }],
    responses: { 101: { description: 'WebSocket upgraded' }, 200: { description: "The browser's response" } },
  });
  registerAssetRoutes(app, deps.assets);
  return app;
}

export type App = ReturnType<typeof createApp>;

/** A create with a body must say it is JSON: a form post from a web page cannot then create sessions. */
function requireJsonBody(c: Context): void {
  const length = c.req.header('content-length');
  const hasBody = (length !== undefined && length !== '0') || c.req.header('transfer-encoding') !== undefined;
  const type = c.req.header('content-type') ?? '';
  if (hasBody && !/^application\/([a-z0-9.+-]*\+)?json\s*(;|$)/i.test(type)) {
    throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'a request body must be JSON (Content-Type: application/json)');
  }
}

/** Workers hand each request an execution context whose waitUntil keeps work alive; Node has none. */
function backgroundOf(c: { executionCtx: { waitUntil(p: Promise<unknown>): void } }): ((p: Promise<unknown>) => void) | undefined {
  try {
    const ctx = c.executionCtx;
    return (p) => ctx.waitUntil(p);
  } catch {
    return undefined;
  }
}
