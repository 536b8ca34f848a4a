import { OpenAPIHono } from '@hono/zod-openapi';
import { swaggerUI } from '@hono/swagger-ui';
import { bodyLimit } from 'hono/body-limit';
import { withDeadline, type Clock } from '../../shared/clock.js';
import { AppError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { isTerminal } from '../../shared/session.js';
import { publicBases, webRequestInfo } from '../public-url.js';
import type { SessionService } from '../sessions/service.js';
import type { SessionStore } from '../store/types.js';
import type { TunnelHub } from '../tunnel/hub.js';
import { errorResponse } from './errors.js';
import { createSessionRoute, deleteSessionRoute, getSessionRoute, healthRoute, listSessionsRoute, sessionStatusRoute } from './routes.js';
import { toView } from './views.js';

export type MetricsPort = {
  contentType: string;
  render(): Promise<string>;
  observeRequest(method: string, route: string, status: number, seconds: number): void;
};

/** Carries one proxied request (HTTP, or a WebSocket upgrade where the runtime takes it this way) to
 * the browser of session `id`: the runtime's data plane. */
export type ProxyPort = (req: Request, id: string) => Promise<Response>;

export type AppDeps = {
  service: SessionService;
  store: SessionStore;
  hub: TunnelHub;
  clock: Clock;
  logger: Logger;
  metrics: MetricsPort;
  proxy: ProxyPort;
  config: { maxBodyBytes: number; publicUrl?: string };
};

const DEFAULT_WAIT_SEC = 60;
const STORE_PING_TIMEOUT_MS = 2000;

/** The runtime-neutral HTTP app: web-standard Request in, Response out. Entry points only add sockets. */
export function createApp(deps: AppDeps) {
  const { service, hub, logger, clock, config } = deps;
  const app = new OpenAPIHono({
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

  const limitBody = bodyLimit({
    maxSize: config.maxBodyBytes,
    onError: () => {
      throw new AppError('PAYLOAD_TOO_LARGE', `request body exceeds ${config.maxBodyBytes} bytes`);
    },
  });
  app.use('/sessions', limitBody);
  app.use('/sessions/:id', limitBody);

  app.openapi(createSessionRoute, async (c) => {
    const query = c.req.valid('query');
    const body = c.req.valid('json') ?? {};
    const wait = query.wait === 'true' ? { waitMs: (query.waitTimeout ?? DEFAULT_WAIT_SEC) * 1000 } : null;
    const session = await service.create(body, wait, backgroundOf(c));
    return c.json(toView(session, publicBases(webRequestInfo(c.req.raw), config.publicUrl)), 201);
  });

  app.openapi(listSessionsRoute, async (c) => {
    const q = c.req.valid('query');
    const page = await service.list({ status: q.status, cursor: q.cursor, limit: q.limit ?? 50 });
    const bases = publicBases(webRequestInfo(c.req.raw), config.publicUrl);
    return c.json({ items: page.items.map((s) => toView(s, bases)), nextCursor: page.nextCursor }, 200);
  });

  app.openapi(getSessionRoute, async (c) => {
    const s = await service.require(c.req.valid('param').id);
    return c.json(toView(s, publicBases(webRequestInfo(c.req.raw), config.publicUrl)), 200);
  });

  app.openapi(sessionStatusRoute, async (c) => {
    const s = await service.require(c.req.valid('param').id);
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
    const s = await service.delete(c.req.valid('param').id);
    return c.json(toView(s, publicBases(webRequestInfo(c.req.raw), config.publicUrl)), 200);
  });

  app.openapi(healthRoute, async (c) => {
    const started = performance.now();
    let store: { ok: boolean; latencyMs: number | null; error?: string };
    try {
      await withDeadline(clock, deps.store.ping(), STORE_PING_TIMEOUT_MS, {
        error: () => new AppError('STORE_UNAVAILABLE', `the session store did not answer within ${STORE_PING_TIMEOUT_MS} ms`),
      });
      store = { ok: true, latencyMs: Math.round((performance.now() - started) * 100) / 100 };
    } catch (err) {
      store = { ok: false, latencyMs: null, error: (err as Error).message };
    }
    const agents = (await hub.agents()).map((a) => ({ cluster: a.cluster, node: a.node, runtime: a.runtime, connectedAt: a.connectedAt }));
    const body = { status: store.ok ? ('ok' as const) : ('degraded' as const), store, agents };
    return c.json(body, store.ok ? 200 : 503);
  });

  app.get('/metrics', async (c) => c.body(await deps.metrics.render(), 200, { 'content-type': deps.metrics.contentType }));

  app.all('/sessions/:id/proxy/*', (c) => deps.proxy(c.req.raw, c.req.param('id')));
  app.all('/sessions/:id/proxy', (c) => deps.proxy(c.req.raw, c.req.param('id')));

  app.doc('/openapi.json', {
    openapi: '3.0.0',
    info: { title: 'Browser session orchestrator', version: '0.1.0', description: 'Isolated headless browsers over REST, driven through a CDP proxy.' },
  });
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/sessions/{id}/proxy/{path}',
    summary: "HTTP or WebSocket (CDP) traffic to the session's browser; any method. `/ui/...` goes to the UI container.",
    responses: { 101: { description: 'WebSocket upgraded' }, 200: { description: "The browser's response" } },
  });
  app.get('/docs', swaggerUI({ url: '/openapi.json' }));
  return app;
}

export type App = ReturnType<typeof createApp>;

/** Workers hand each request an execution context whose waitUntil keeps work alive; Node has none. */
function backgroundOf(c: { executionCtx: { waitUntil(p: Promise<unknown>): void } }): ((p: Promise<unknown>) => void) | undefined {
  try {
    const ctx = c.executionCtx;
    return (p) => ctx.waitUntil(p);
  } catch {
    return undefined;
  }
}
