import { withDeadline, type Clock } from '../../shared/clock.js';
import { AppError } from '../../shared/errors.js';
import { SessionId, type Session } from '../../shared/session.js';
import type { StreamSpec } from '../../shared/tunnel/protocol.js';
import type { StreamHead, TunnelStream } from '../../shared/tunnel/stream.js';
import type { Access } from '../auth/access.js';
import { sessionCookie, sessionOfHost, tokenFromCookie, type SessionHosts } from '../session-hosts.js';
import { publicBases, type PublicUrlPolicy, type RequestInfo } from '../public-url.js';
import type { Placement } from '../tunnel/hub.js';
import { clientResponseHeaders, upstreamRequestHeaders, type HeaderPairs } from './headers.js';
import { assertProxyable, isDevtoolsJsonPath, rewriteDevtoolsUrls, streamSpecFor, proxyRequestParts } from './target.js';

/** Opens a byte stream to the agent that serves `to` (the in-process hub's tunnels). */
export type StreamOpener = (to: Placement, spec: StreamSpec, opts?: { bodyless?: boolean }) => TunnelStream;

/** A proxied request, resolved and admitted: the running session, the path at the browser, the public
 * WebSocket base, and the token rewritten DevTools URLs carry (when keys are on). */
export type ProxyTarget = {
  session: Session;
  path: string;
  wsBase: string;
  connectToken?: string;
  /** A session host opened with `?token=`: the answer keeps the token in that host's cookie. */
  setCookie?: string;
  /** A session host's container (its whole path space); absent: by path (`/ui/…` is the UI container). */
  target?: StreamSpec['target'];
};

/** Resolves and admits one proxied request (`upgrade`: a WebSocket). */
export type TargetResolver = (id: string, url: URL, info: RequestInfo, upgrade: boolean) => Promise<ProxyTarget>;

/** An HTTP exchange whose head arrived; the caller delivers the body. `rewrite`: a DevTools JSON
 * answer whose WebSocket URLs must point back through the router (collect it whole, then rewrite). */
export type HttpAnswer = { stream: TunnelStream; status: number; headers: Array<[string, string]>; rewrite: boolean };

export type WebSocketMode = 'splice' | 'messages';

const PROXY_PATH = /^\/sessions\/([^/]+)\/proxy(\/.*)?$/;
export const proxySessionId = (pathname: string): string | null => PROXY_PATH.exec(pathname)?.[1] ?? null;

const HEAD_TIMEOUT_MS = 30_000;
const OPEN_TIMEOUT_MS = 15_000;

/**
 * The router's data plane: carries proxied HTTP exchanges and WebSockets to a session's browser over
 * the agent's tunnel. Runtime-neutral; each runtime's adapter (router/data-plane/node.ts, the Durable
 * Object) only moves bytes between its own sockets and these streams.
 */
export class DataPlane {
  constructor(
    private readonly deps: {
      openStream: StreamOpener;
      clock: Clock;
    },
  ) {}

  /** Starts one HTTP exchange: `sendBody` pumps the request body (unless bodyless); resolves with the head. */
  async http(t: ProxyTarget, method: string, headers: HeaderPairs, body: ((stream: TunnelStream) => void) | null): Promise<HttpAnswer> {
    const spec = streamSpecFor(t.session, 'http', method, t.path, upstreamRequestHeaders(headers, 'http'), t.target);
    const stream = this.deps.openStream(placementOf(t.session), spec, { bodyless: body === null });
    body?.(stream);
    const head = await this.awaitHead(stream, HEAD_TIMEOUT_MS, 'the browser did not answer');
    const answerHeaders = clientResponseHeaders(head.headers);
    if (t.setCookie) answerHeaders.push(['set-cookie', t.setCookie]);
    return { stream, status: head.status, headers: answerHeaders, rewrite: spec.target === 'api' && head.status === 200 && isDevtoolsJsonPath(spec.path) };
  }

  /** HTTP as web-standard Request and Response (the Hono app, the Durable Object). */
  async fetch(t: ProxyTarget, req: Request): Promise<Response> {
    const answer = await this.http(t, req.method, req.headers, req.body ? (stream) => void pumpWebBody(req.body!, stream) : null);
    const body = responseBody(answer.stream);
    if (answer.rewrite) {
      const text = await new Response(body).text();
      return new Response(rewriteDevtoolsUrls(text, t.wsBase, t.session.id, t.connectToken), { status: answer.status, headers: answer.headers });
    }
    const nullBody = req.method === 'HEAD' || answer.status === 204 || answer.status === 304;
    if (nullBody) void body.cancel();
    return new Response(nullBody ? null : body, { status: answer.status, headers: answer.headers });
  }

  /** Opens the browser side of a WebSocket and resolves once the browser accepted it. In splice mode
   * `early` holds bytes the client sent after its handshake. */
  async webSocket(t: ProxyTarget, headers: HeaderPairs, mode: WebSocketMode, early?: Uint8Array): Promise<{ stream: TunnelStream; head: StreamHead }> {
    const kind = mode === 'splice' ? 'upgrade' : 'ws';
    const stream = this.deps.openStream(placementOf(t.session), streamSpecFor(t.session, kind, 'GET', t.path, upstreamRequestHeaders(headers, kind), t.target));
    if (early?.byteLength) stream.write('data', early);
    return { stream, head: await this.awaitHead(stream, OPEN_TIMEOUT_MS, 'the browser did not accept the WebSocket') };
  }

  private awaitHead(stream: TunnelStream, ms: number, what: string): Promise<StreamHead> {
    return withDeadline(this.deps.clock, stream.head, ms, {
      error: () => new AppError('TIMEOUT', `${what} within ${ms} ms`),
      onTimeout: () => stream.close(1011, 'no answer in time'),
    });
  }
}

/**
 * Which session and path a request is for, once `access` admitted it (session token or key, origin,
 * rate limit); unknown ids, other keys' sessions and sessions not running are refused. `lookup` reads
 * the session (through a short-lived cache on Node).
 */
export function targetResolver(deps: { lookup: (id: string) => Promise<Session>; access: Access; publicUrl: PublicUrlPolicy; sessionHosts?: SessionHosts }): TargetResolver {
  return async (id, url, info, upgrade) => {
    if (!SessionId.safeParse(id).success) throw new AppError('VALIDATION_FAILED', 'invalid session id');
    const parts = proxyRequestParts(url, id);
    // On the session's own host, its pages' requests carry the token in that host's cookie.
    const onSessionHost = sessionOfHost(info.header('host'), deps.sessionHosts) === id;
    const token = parts.token ?? (onSessionHost ? tokenFromCookie(info.header('cookie')) : null);
    const { session, connectToken } = await deps.access.admitProxy(info, id, token, deps.lookup, upgrade);
    assertProxyable(session);
    const bases = publicBases(info, deps.publicUrl);
    // Only a token that was verified (keys on: the admission checked it) is kept; without keys there is none to keep.
    const setCookie = onSessionHost && parts.token && connectToken !== undefined && !upgrade ? sessionCookie(parts.token, bases.http.startsWith('https:')) : undefined;
    return { session, path: parts.path, wsBase: bases.ws, connectToken, ...(setCookie ? { setCookie } : {}), ...(onSessionHost ? { target: deps.sessionHosts!.target } : {}) };
  };
}

const placementOf = (s: Session): Placement => ({ cluster: s.cluster, node: s.node });

async function pumpWebBody(body: ReadableStream<Uint8Array>, stream: TunnelStream): Promise<void> {
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (stream.isClosed) return void reader.cancel();
      if (!stream.write('data', value)) await new Promise<void>((r) => (stream.onDrain = r));
    }
    stream.end();
  } catch {
    stream.close(1011, 'client request body failed');
  }
}

/** Credit is handed back only as the consumer pulls, so a slow client slows only its own stream. */
function responseBody(stream: TunnelStream): ReadableStream<Uint8Array> {
  let owed = 0;
  let ended = false;
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        stream.onData = (_kind, payload) => {
          controller.enqueue(payload);
          if ((controller.desiredSize ?? 0) > 0) stream.consumed(payload.byteLength);
          else owed += payload.byteLength;
        };
        stream.onEnd = () => {
          ended = true;
          controller.close();
        };
        stream.onClose = (_code, reason) => {
          if (!ended) {
            ended = true;
            controller.error(new AppError('BROWSER_UNREACHABLE', reason ?? 'upstream closed the response early'));
          }
        };
        stream.start();
      },
      pull() {
        if (owed > 0) {
          stream.consumed(owed);
          owed = 0;
        }
      },
      cancel() {
        if (!ended) stream.close(1001, 'client went away');
      },
    },
    { highWaterMark: 256 * 1024, size: (chunk) => chunk.byteLength },
  );
}
