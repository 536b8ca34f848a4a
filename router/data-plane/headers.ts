import type { StreamSpec } from '../../shared/tunnel/protocol.js';
import { SESSION_COOKIE } from '../session-hosts.js';

/** Headers that describe one hop (RFC 9110 §7.6.1); every name `Connection:` lists joins them. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

/**
 * Request headers the router never passes to a browser, by stream kind. `host`: Chromium's DevTools
 * server refuses a Host that is not an IP or localhost. WebSocket streams: the agent makes its own
 * handshake (`ws`), or the browser answers the client's own key (`upgrade`, spliced); `origin`:
 * Chromium refuses DevTools sockets with an Origin, and the router checked it already (ALLOWED_ORIGINS).
 * The client's API key is for the router: it never reaches an agent or a browser.
 */
const ROUTER_CREDENTIALS = ['authorization', 'x-api-key'];
const DROP_REQUEST: Record<StreamSpec['kind'], readonly string[]> = {
  http: ['host', ...ROUTER_CREDENTIALS],
  ws: ['host', 'origin', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-accept', ...ROUTER_CREDENTIALS],
  upgrade: ['host', 'origin', ...ROUTER_CREDENTIALS],
};

/** Response headers the router sets itself: the body is re-framed (and may be rewritten). */
const DROP_RESPONSE = ['content-length'];

/** What a spliced browser's 101 answer may pass on to the client. */
const UPGRADE_ANSWER = new Set(['upgrade', 'connection', 'sec-websocket-accept', 'sec-websocket-protocol', 'sec-websocket-extensions']);

function dropped(connection: string | undefined, extra: readonly string[]): Set<string> {
  const names = new Set([...HOP_BY_HOP, ...extra]);
  for (const token of (connection ?? '').split(',')) {
    const name = token.trim().toLowerCase();
    if (name) names.add(name);
  }
  return names;
}

export type HeaderPairs = Iterable<readonly [string, string]>;

function connectionOf(pairs: Array<readonly [string, string]>): string | undefined {
  return (
    pairs
      .filter(([k]) => k.toLowerCase() === 'connection')
      .map(([, v]) => v)
      .join(',') || undefined
  );
}

/** A client's request headers as the browser should see them, for a stream of `kind`. */
export function upstreamRequestHeaders(headers: HeaderPairs, kind: StreamSpec['kind']): Record<string, string> {
  const pairs = [...headers];
  const drop = dropped(connectionOf(pairs), DROP_REQUEST[kind]);
  const out: Record<string, string> = {};
  for (const [k, v] of pairs) {
    const name = k.toLowerCase();
    if (drop.has(name)) continue;
    out[name] = name in out ? `${out[name]}${name === 'cookie' ? '; ' : ', '}${v}` : v;
  }
  // A session host's token cookie is for the router, like the key: the session's containers never see it.
  if (out.cookie !== undefined) {
    const kept = out.cookie
      .split(';')
      .map((c) => c.trim())
      .filter((c) => c && c.split('=')[0]!.trim() !== SESSION_COOKIE);
    if (kept.length) out.cookie = kept.join('; ');
    else delete out.cookie;
  }
  return out;
}

/** A browser's response headers as the client should see them. */
export function clientResponseHeaders(headers: HeaderPairs): Array<[string, string]> {
  const pairs = [...headers];
  const drop = dropped(connectionOf(pairs), DROP_RESPONSE);
  return pairs.filter(([k]) => !drop.has(k.toLowerCase())).map(([k, v]) => [k.toLowerCase(), v]);
}

/** The headers of a spliced 101 answer the client's socket may see. */
export function upgradeAnswerHeaders(headers: HeaderPairs): Array<[string, string]> {
  return [...headers].filter(([k]) => UPGRADE_ANSWER.has(k.toLowerCase())).map(([k, v]) => [k.toLowerCase(), v]);
}
