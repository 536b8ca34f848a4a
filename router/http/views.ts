import type { SessionView } from '../../shared/api.js';
import type { Session } from '../../shared/session.js';

export function toView(s: Session, bases: { http: string; ws: string }): SessionView {
  const { endpoints: _endpoints, ...rest } = s;
  return {
    ...rest,
    // A stable alias: the agent maps it to the browser's real /devtools/browser/<id> path.
    cdpUrl: `${bases.ws}/sessions/${s.id}/proxy/devtools/browser`,
    proxyUrl: `${bases.http}/sessions/${s.id}/proxy`,
  };
}
