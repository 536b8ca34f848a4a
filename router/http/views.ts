import type { SessionView } from '../../shared/api.js';
import type { Session } from '../../shared/session.js';
import { tokenSegment } from '../data-plane/target.js';
import { uiUrlOf, type SessionHosts } from '../session-hosts.js';

/** `token`: the session's connect token, so the URLs work alone (Playwright, Puppeteer, no headers). */
export function toView(s: Session, bases: { http: string; ws: string }, token?: string, sessionHosts?: SessionHosts): SessionView {
  const { endpoints, ...rest } = s;
  const proxy = `/sessions/${s.id}/proxy${tokenSegment(token)}`;
  const links = s.status === 'running' ? endpoints?.links : undefined;
  return {
    ...rest,
    // A stable alias: the agent maps it to the browser's real CDP path (/devtools/browser/<id>; steel: /).
    cdpUrl: `${bases.ws}${proxy}/devtools/browser`,
    proxyUrl: `${bases.http}${proxy}`,
    // The pages an image hands out (steel's), through the router with the session's token.
    ...(links?.websocket ? { websocketUrl: `${bases.ws}${proxy}${links.websocket}` } : {}),
    ...(links?.debug ? { debugUrl: `${bases.http}${proxy}${links.debug}` } : {}),
    ...(links?.viewer ? { sessionViewerUrl: `${bases.http}${proxy}${links.viewer}` } : {}),
    // The session on its own host: single-page UIs with absolute paths work there.
    ...(sessionHosts ? { uiUrl: uiUrlOf(bases.http, s.id, sessionHosts, token) } : {}),
  };
}
