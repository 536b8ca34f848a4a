import type { SessionView } from '../../shared/api.js';
import type { Session } from '../../shared/session.js';

/** Public base URLs: PUBLIC_URL when configured, else what the client used to reach us. */
export type RequestInfo = { url: string; header(name: string): string | null | undefined };

export const webRequestInfo = (req: Request): RequestInfo => ({ url: req.url, header: (n) => req.headers.get(n) });

export function publicBases(req: RequestInfo, publicUrl?: string): { http: string; ws: string } {
  let http = publicUrl;
  if (!http) {
    const url = new URL(req.url);
    const proto = req.header('x-forwarded-proto')?.split(',')[0]?.trim() || url.protocol.replace(':', '');
    const host = req.header('x-forwarded-host')?.split(',')[0]?.trim() || req.header('host') || url.host;
    http = `${proto}://${host}`;
  }
  return { http, ws: http.replace(/^http/, 'ws') };
}

export function toView(s: Session, bases: { http: string; ws: string }): SessionView {
  const { endpoints: _endpoints, ...rest } = s;
  return {
    ...rest,
    // A stable alias: the agent maps it to the browser's real /devtools/browser/<id> path.
    cdpUrl: `${bases.ws}/sessions/${s.id}/proxy/devtools/browser`,
    proxyUrl: `${bases.http}/sessions/${s.id}/proxy`,
  };
}
