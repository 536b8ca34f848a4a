import { SessionId } from '../shared/session.js';

/**
 * Each session on a host of its own, `<session-id>.<suffix>` (SESSION_HOST_SUFFIX): single-page apps
 * whose assets and API calls use absolute paths (`/assets`, `/api`, `/ws`, steel's UI) work there,
 * where under `/sessions/:id/proxy/ui/` they would miss. A request to such a host stands for the path
 * form `/sessions/:id/proxy/<path>`, to the host's target container, through the same admission and data plane.
 */
export type SessionHosts = {
  /** A DNS name (`sessions.example.com`; `localhost`, which Chromium resolves to loopback). */
  suffix: string;
  /** What a session host serves: the UI container, or the browser API container (its own UI). */
  target: 'ui' | 'api';
};

/** The cookie a session host keeps the session's token in, once a `?token=` URL opened it. */
export const SESSION_COOKIE = 'bso_session_token';

/** The session a `Host` header names, or null when it is not a session host. */
export function sessionOfHost(host: string | null | undefined, hosts: SessionHosts | undefined): string | null {
  if (!hosts || !host) return null;
  const name = host
    .toLowerCase()
    .replace(/:\d{1,5}$/, '')
    .replace(/\.$/, '');
  const tail = `.${hosts.suffix}`;
  if (!name.endsWith(tail)) return null;
  const label = name.slice(0, -tail.length);
  return !label.includes('.') && SessionId.safeParse(label).success ? label : null;
}

/** The path-form URL a session-host request is routed as. Which container it reaches is the host's
 * target (the resolver sets it), not a `/ui` prefix: every path of the host is the container's own. */
export function pathForm(url: URL, id: string): URL {
  return new URL(`/sessions/${id}/proxy${url.pathname}${url.search}`, url);
}

/** The session's token from a session host's cookie; null when there is none. */
export function tokenFromCookie(cookieHeader: string | null | undefined): string | null {
  for (const part of (cookieHeader ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) return part.slice(eq + 1).trim() || null;
  }
  return null;
}

/** Host-only (no Domain: no other session's host sees it), script-proof, sent only by the session's own pages and top-level navigation. */
export function sessionCookie(token: string, secure: boolean): string {
  if (!/^[\w.~-]+$/.test(token)) throw new Error('a session token is URL-safe text');
  return `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
}

/** Where a client opens the session's UI: its own host, on the router's public scheme and port, with its token when keys are on. */
export function uiUrlOf(httpBase: string, id: string, hosts: SessionHosts, token?: string): string {
  const base = new URL(httpBase);
  return `${base.protocol}//${id}.${hosts.suffix}${base.port ? `:${base.port}` : ''}/${token ? `?token=${encodeURIComponent(token)}` : ''}`;
}
