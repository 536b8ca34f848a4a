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
