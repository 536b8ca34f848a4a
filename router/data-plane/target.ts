import { AppError } from '../../shared/errors.js';
import type { Session } from '../../shared/session.js';
import type { StreamSpec } from '../../shared/tunnel/protocol.js';

export function assertProxyable(session: Session): void {
  if (session.status !== 'running') {
    throw new AppError('SESSION_NOT_RUNNING', `session ${session.id} is ${session.status}, not running`, { details: { status: session.status } });
  }
}

/** `/ui/...` goes to the UI container; everything else to the browser API (CDP). */
export function streamSpecFor(session: Session, kind: StreamSpec['kind'], method: string, pathAndQuery: string, headers: Record<string, string>): StreamSpec {
  const ui = pathAndQuery === '/ui' || pathAndQuery.startsWith('/ui/') || pathAndQuery.startsWith('/ui?');
  const path = ui ? pathAndQuery.slice(3) || '/' : pathAndQuery;
  return { sessionId: session.id, kind, method, path: path.startsWith('/') ? path : `/${path}`, headers, target: ui ? 'ui' : 'api' };
}

/** The path after `/sessions/:id/proxy`, with its query string. */
export function upstreamPath(url: URL, sessionId: string): string {
  const prefix = `/sessions/${sessionId}/proxy`;
  const rest = url.pathname.startsWith(prefix) ? url.pathname.slice(prefix.length) : '/';
  return (rest || '/') + url.search;
}

/** Browsers hand out `ws://127.0.0.1:PORT/devtools/...` URLs; point them back through the router. */
export function rewriteDevtoolsUrls(body: string, wsBase: string, sessionId: string): string {
  const viaRouter = `${wsBase}/sessions/${sessionId}/proxy/devtools/`;
  const hostPath = viaRouter.replace(/^wss?:\/\//, '');
  return body.replace(/wss?:\/\/[^/"\s]+\/devtools\//g, viaRouter).replace(/([?&]wss?=)[^/"&\s]+\/devtools\//g, `$1${hostPath}`);
}

export const isDevtoolsJsonPath = (path: string): boolean => /^\/json(\/(version|list|new))?\/?(\?.*)?$/.test(path);
