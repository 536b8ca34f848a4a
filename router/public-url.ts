/** What the router needs to know of a request, whichever runtime received it. */
export type RequestInfo = {
  url: string;
  method: string;
  header(name: string): string | null | undefined;
  /** The peer's address, or the client's as a trusted proxy reported it (TRUST_PROXY). */
  clientAddress: string;
};

export const webRequestInfo = (req: Request, clientAddress: string): RequestInfo => ({
  url: req.url,
  method: req.method,
  header: (n) => req.headers.get(n),
  clientAddress,
});

/**
 * Where `cdpUrl`/`proxyUrl` point. PUBLIC_URL when configured; otherwise the request's `Host` only if
 * it is one the router answers to (a forged Host must never come back as a URL a client then sends
 * its token to), else the runtime's default. `X-Forwarded-*` count only behind a trusted proxy.
 */
export type PublicUrlPolicy = {
  publicUrl?: string;
  trustProxy: boolean;
  /** Explicit ALLOWED_HOSTS; empty: `defaultHosts`. */
  allowedHosts: readonly string[];
  /** The runtime's own names (Node: the listen address and localhost with the bound port); null: any
   * host the platform routed to us (Workers, where the platform only routes configured hosts). */
  defaultHosts: () => ReadonlySet<string> | null;
  /** Used when the request's host is not allowed. */
  fallbackHost: (requestUrl: URL) => string;
};

export function publicBases(req: RequestInfo, policy: PublicUrlPolicy): { http: string; ws: string } {
  let http = policy.publicUrl;
  if (!http) {
    const url = new URL(req.url);
    let proto = url.protocol.replace(':', '');
    let host = (req.header('host') ?? url.host).toLowerCase();
    let forwarded = false;
    if (policy.trustProxy) {
      const fproto = req.header('x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
      const fhost = req.header('x-forwarded-host')?.split(',')[0]?.trim().toLowerCase();
      if (fproto === 'http' || fproto === 'https') proto = fproto;
      if (fhost) [host, forwarded] = [fhost, true];
    }
    if (!hostAllowed(host, forwarded, policy)) host = policy.fallbackHost(url);
    http = `${proto}://${host}`;
  }
  return { http, ws: http.replace(/^http/, 'ws') };
}

function hostAllowed(host: string, forwarded: boolean, policy: PublicUrlPolicy): boolean {
  if (!/^[a-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$/.test(host)) return false;
  if (policy.allowedHosts.length) return policy.allowedHosts.includes(host);
  // A proxy we were told to trust names the public host itself.
  if (forwarded) return true;
  const defaults = policy.defaultHosts();
  return defaults === null || defaults.has(host);
}

/** The client's address: the peer's, or with TRUST_PROXY the first X-Forwarded-For entry the proxy added. */
export function clientAddressOf(peer: string | undefined, forwardedFor: () => string | null | undefined, trustProxy: boolean): string {
  const forwarded = trustProxy ? forwardedFor()?.split(',')[0]?.trim() : undefined;
  return (forwarded || peer || 'unknown').slice(0, 64);
}
