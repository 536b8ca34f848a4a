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
export const WELCOME = JSON.stringify({ t: 'welcome', v: PROTOCOL_VERSION });

export function bearerToken(authorization: string | null | undefined): string | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return m ? m[1]! : null;
}

/** Compares digests, so the time taken says nothing about the token or its length. */
export async function tokensEqual(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([sha256(given), sha256(expected)]);
  return bytesEqual(a, b);
}

/** Checks an agent's upgrade request before any socket exists; throws the AppError to answer with. */
export async function admitAgent(
  req: { authorization: string | null | undefined; upgrade: string | null | undefined; url: URL },
  agentToken: string,
): Promise<{ cluster: string }> {
  const token = bearerToken(req.authorization);
  if (!token || !(await tokensEqual(token, agentToken))) throw new AppError('UNAUTHORIZED', 'agent token missing or wrong');
  const cluster = req.url.searchParams.get('cluster') ?? '';
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
