import type { SessionView } from '../../shared/api.js';
import type { Session } from '../../shared/session.js';
import { tokenSegment } from '../data-plane/target.js';

/** `token`: the session's connect token, so the URLs work alone (Playwright, Puppeteer, no headers). */
export function toView(s: Session, bases: { http: string; ws: string }, token?: string): SessionView {
  const { endpoints: _endpoints, ...rest } = s;
  const proxy = `/sessions/${s.id}/proxy${tokenSegment(token)}`;
  return {
    ...rest,
    // A stable alias: the agent maps it to the browser's real /devtools/browser/<id> path.
    cdpUrl: `${bases.ws}${proxy}/devtools/browser`,
    proxyUrl: `${bases.http}${proxy}`,
  };
}
