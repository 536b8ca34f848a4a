import { bytesEqual, sha256 } from '../crypto.js';
import { AppError } from '../errors.js';
import { CLUSTER_ID, Hello, PROTOCOL_VERSION, TunnelClose } from './protocol.js';

/**
 * The router's side of an agent's handshake, for every runtime (the Node endpoint and the Durable
 * Object): who may open a tunnel, what its first message must say, and how long it may take.
 */
export const AGENT_CONNECT_PATH = '/agent/connect';
export const HELLO_TIMEOUT_MS = 5000;
export const MAX_HELLO_BYTES = 4096;
/** The largest tunnel message either end accepts: data frames are at most 64 KiB, control messages
 * (a sync with every session's snapshot) far below this. A bigger one ends the tunnel with 1009
 * before it is read, so a hostile hello or frame never sits whole in memory. */
export const MAX_TUNNEL_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Streams one tunnel carries at once (each a proxied request or WebSocket); more are refused with 429. */
export const MAX_TUNNEL_STREAMS = 1024;

/** Who may open a tunnel: a token bound to one cluster, or (single-cluster setups) one for any cluster. */
export type AgentTokens = { anyCluster?: string; byCluster: Readonly<Record<string, string>> };

/** `cluster:token,cluster:token` (AGENT_TOKENS). Errors name the entry, never the token. */
export function parseAgentTokens(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!text?.trim()) return out;
  text.split(',').forEach((pair, i) => {
    const at = pair.indexOf(':');
    const cluster = pair.slice(0, at).trim();
    const token = pair.slice(at + 1).trim();
    if (at <= 0 || !CLUSTER_ID.test(cluster)) throw new Error(`entry ${i + 1} is not cluster:token with a cluster id that is a DNS label`);
    if (token.length < 16 || /\s/.test(token)) throw new Error(`the token of cluster "${cluster}" must be at least 16 characters without spaces`);
    if (out[cluster]) throw new Error(`cluster "${cluster}" has two tokens`);
    out[cluster] = token;
  });
  return out;
}
/** The router's answer to a good hello; a replica names itself and every live replica. */
export function welcome(replica?: { id: string; replicas: string[] }): string {
  return JSON.stringify({ t: 'welcome', v: PROTOCOL_VERSION, ...(replica ? { replica: replica.id, replicas: replica.replicas } : {}) });
}

export function bearerToken(authorization: string | null | undefined): string | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return m ? m[1]! : null;
}

/** Compares digests, so the time taken says nothing about the token or its length. */
export async function tokensEqual(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([sha256(given), sha256(expected)]);
  return bytesEqual(a, b);
}

/**
 * Checks an agent's upgrade request before any socket exists; throws the AppError to answer with. A
 * cluster with a token of its own takes only that token: one cluster's token opens no other cluster.
 */
export async function admitAgent(
  req: { authorization: string | null | undefined; upgrade: string | null | undefined; url: URL },
  tokens: AgentTokens,
): Promise<{ cluster: string }> {
  const token = bearerToken(req.authorization);
  const cluster = req.url.searchParams.get('cluster') ?? '';
  const expected = (Object.hasOwn(tokens.byCluster, cluster) ? tokens.byCluster[cluster] : undefined) ?? tokens.anyCluster;
  if (!token || !expected || !(await tokensEqual(token, expected))) throw new AppError('UNAUTHORIZED', 'agent token missing or wrong');
  if (!CLUSTER_ID.test(cluster)) throw new AppError('VALIDATION_FAILED', 'the agent must name its cluster (?cluster=, a DNS label)');
  if (req.upgrade?.toLowerCase() !== 'websocket') throw new AppError('UPGRADE_REQUIRED', 'WebSocket upgrade required');
  return { cluster };
}

export type HelloOutcome = { ok: true; hello: Hello } | { ok: false; code: number; reason: string };

/** The first message of an admitted tunnel: a hello for the cluster its URL named, in our protocol version. */
export function acceptHello(message: string | Uint8Array, cluster: string): HelloOutcome {
  if (typeof message !== 'string' || message.length > MAX_HELLO_BYTES) return { ok: false, code: TunnelClose.BAD_HELLO, reason: 'expected hello' };
  let parsed: ReturnType<typeof Hello.safeParse>;
  try {
    parsed = Hello.safeParse(JSON.parse(message));
  } catch {
    return { ok: false, code: TunnelClose.BAD_HELLO, reason: 'expected hello' };
  }
  if (!parsed.success) return { ok: false, code: TunnelClose.BAD_HELLO, reason: 'expected hello' };
  const hello = parsed.data;
  if (hello.v !== PROTOCOL_VERSION)
    return { ok: false, code: TunnelClose.UNSUPPORTED_VERSION, reason: `protocol version ${hello.v} unsupported; router speaks ${PROTOCOL_VERSION}` };
  if (hello.clusterId !== cluster) return { ok: false, code: TunnelClose.WRONG_CLUSTER, reason: `hello names cluster ${hello.clusterId}, URL named ${cluster}` };
  return { ok: true, hello };
}
