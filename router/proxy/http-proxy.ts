import type { Clock } from '../../shared/clock.js';
import { AppError } from '../../shared/errors.js';
import type { Session } from '../../shared/session.js';
import type { TunnelStream } from '../../shared/tunnel/stream.js';
import type { StreamSpec } from '../../shared/tunnel/protocol.js';
import type { Placement } from '../tunnel/hub.js';
import { forwardableHeaders, isDevtoolsJsonPath, rewriteDevtoolsUrls, streamSpecFor } from './target.js';

const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length']);
const HEAD_TIMEOUT_MS = 30_000;

export type HttpProxyDeps = { hub: { openStream(to: Placement, spec: StreamSpec, opts?: { bodyless?: boolean }): TunnelStream }; clock: Clock };

/** Carries one HTTP exchange to the session's browser over the tunnel, streaming both bodies. */
export async function proxyHttp(deps: HttpProxyDeps, session: Session, req: Request, path: string, wsBase: string): Promise<Response> {
  const spec = streamSpecFor(session, 'http', req.method, path, forwardableHeaders(req.headers));
  const bodyless = req.body === null;
  const stream = deps.hub.openStream({ cluster: session.cluster, node: session.node }, spec, { bodyless });
  if (!bodyless) void pumpRequestBody(req, stream);
  const head = await withTimeout(deps.clock, stream.head, HEAD_TIMEOUT_MS, () => stream.close(1011, 'no response head'));
  const headers = new Headers();
  for (const [k, v] of head.headers) if (!RESPONSE_HOP_BY_HOP.has(k.toLowerCase())) headers.append(k, v);
  const body = responseBody(stream);
  if (spec.target === 'api' && isDevtoolsJsonPath(spec.path) && head.status === 200) {
    const text = await new Response(body).text();
    return new Response(rewriteDevtoolsUrls(text, wsBase, session.id), { status: head.status, headers });
  }
  const nullBody = req.method === 'HEAD' || head.status === 204 || head.status === 304;
  if (nullBody) void body.cancel();
  return new Response(nullBody ? null : body, { status: head.status, headers });
}

async function pumpRequestBody(req: Request, stream: TunnelStream): Promise<void> {
  if (!req.body) return stream.end();
  const reader = req.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (stream.isClosed) return;
      if (!stream.write('data', value)) await new Promise<void>((r) => (stream.onDrain = r));
    }
    stream.end();
  } catch {
    stream.close(1011, 'client request body failed');
  }
}

/** Credit is handed back only as the consumer pulls, so a slow client slows only its own stream. */
function responseBody(stream: TunnelStream): ReadableStream<Uint8Array> {
  let owed = 0;
  let ended = false;
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        stream.onData = (_kind, payload) => {
          controller.enqueue(payload);
          if ((controller.desiredSize ?? 0) > 0) stream.consumed(payload.byteLength);
          else owed += payload.byteLength;
        };
        stream.onEnd = () => {
          ended = true;
          controller.close();
        };
        stream.onClose = (_code, reason) => {
          if (!ended) {
            ended = true;
            controller.error(new AppError('BROWSER_UNREACHABLE', reason ?? 'upstream closed the response early'));
          }
        };
        stream.start();
      },
      pull() {
        if (owed > 0) {
          stream.consumed(owed);
          owed = 0;
        }
      },
      cancel() {
        if (!ended) stream.close(1001, 'client went away');
      },
    },
    { highWaterMark: 256 * 1024, size: (chunk) => chunk.byteLength },
  );
}

export async function withTimeout<T>(clock: Clock, p: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = clock.setTimeout(() => {
          onTimeout();
          reject(new AppError('TIMEOUT', `the browser did not answer within ${ms} ms`));
        }, ms);
      }),
    ]);
  } finally {
    if (timer !== undefined) clock.clearTimeout(timer);
  }
}
