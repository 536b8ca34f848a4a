import { AppError } from '../../shared/errors.js';
import type { Session } from '../../shared/session.js';
import type { StreamSpec } from '../../shared/tunnel/protocol.js';

export function assertProxyable(session: Session): void {
  if (session.status !== 'running') {
    throw new AppError('SESSION_NOT_RUNNING', `session ${session.id} is ${session.status}, not running`, { details: { status: session.status } });
  }
}

/** `/ui/...` goes to the UI container; everything else to the browser API (CDP). A session host names
 * its container itself (`target`), and then the path is the container's own, `/ui` included. */
export function streamSpecFor(
  session: Session,
  kind: StreamSpec['kind'],
  method: string,
  pathAndQuery: string,
  headers: Record<string, string>,
  target?: StreamSpec['target'],
): StreamSpec {
  if (target) return { sessionId: session.id, kind, method, path: pathAndQuery.startsWith('/') ? pathAndQuery : `/${pathAndQuery}`, headers, target };
  const ui = pathAndQuery === '/ui' || pathAndQuery.startsWith('/ui/') || pathAndQuery.startsWith('/ui?');
  const path = ui ? pathAndQuery.slice(3) || '/' : pathAndQuery;
  return { sessionId: session.id, kind, method, path: path.startsWith('/') ? path : `/${path}`, headers, target: ui ? 'ui' : 'api' };
}

/** The path segment that carries a session token: `/sessions/:id/proxy/~<token>/…`. In the path, not
 * the query, so `proxyUrl` stays a base a client can append paths to. */
export const tokenSegment = (token: string | undefined): string => (token ? `/~${token}` : '');

/**
 * What a proxied URL asks for: the session token (the `~<token>` segment, or `?token=`) and the path
 * at the browser with its query as the client wrote it, less the token: the browser never sees it.
 */
export function proxyRequestParts(url: URL, sessionId: string): { token: string | null; path: string } {
  const prefix = `/sessions/${sessionId}/proxy`;
  let rest = url.pathname.startsWith(prefix) ? url.pathname.slice(prefix.length) : '/';
  let token: string | null = null;
  const segment = /^\/~([^/]*)/.exec(rest);
  if (segment) {
    token = segment[1]!;
    rest = rest.slice(segment[0].length);
  }
  const kept: string[] = [];
  for (const part of url.search.slice(1).split('&')) {
    if (part === '') continue;
    if (/^token(=|$)/.test(part)) token ??= safeDecode(part.slice(6));
    else kept.push(part);
  }
  return { token, path: (rest || '/') + (kept.length ? `?${kept.join('&')}` : '') };
}

/** Browsers hand out `ws://127.0.0.1:PORT/devtools/...` URLs; point them back through the router, with
 * the session's token when keys are on (a client that found the URL in `/json/version` connects with it alone). */
export function rewriteDevtoolsUrls(body: string, wsBase: string, sessionId: string, token?: string): string {
  const viaRouter = `${wsBase}/sessions/${sessionId}/proxy${tokenSegment(token)}/devtools/`;
  const hostPath = viaRouter.replace(/^wss?:\/\//, '');
  return body.replace(/wss?:\/\/[^/"\s]+\/devtools\//g, viaRouter).replace(/([?&]wss?=)[^/"&\s]+\/devtools\//g, `$1${hostPath}`);
}

export const isDevtoolsJsonPath = (path: string): boolean => /^\/json(\/(version|list|new))?\/?(\?.*)?$/.test(path);

/** A malformed escape is a token that will not verify, not a crash. */
function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return '';
  }
}
