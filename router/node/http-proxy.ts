import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Clock } from '../../shared/clock.js';
import { AppError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { SessionId } from '../../shared/session.js';
import { errorBody, toAppError } from '../http/errors.js';
import { publicBases, type RequestInfo } from '../http/views.js';
import { withTimeout } from '../proxy/http-proxy.js';
import { assertProxyable, isDevtoolsJsonPath, rewriteDevtoolsUrls, streamSpecFor, upstreamPath } from '../proxy/target.js';
import type { SessionService } from '../sessions/service.js';
import type { InProcessHub } from '../tunnel/in-process-hub.js';

const HEAD_TIMEOUT_MS = 30_000;
const REQUEST_HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer',
  'transfer-encoding', 'upgrade', 'host',
]);
const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length']);

/**
 * Proxied HTTP on Node, straight from IncomingMessage to ServerResponse. It does what the
 * runtime-neutral proxy (router/proxy/http-proxy.ts, used on Workers) does, without building
 * web-standard Request and Response objects per request, which cost more than the tunnel itself.
 */
export function createNodeHttpProxy(deps: { service: SessionService; hub: InProcessHub; clock: Clock; logger: Logger; publicUrl?: string }) {
  return async (req: IncomingMessage, res: ServerResponse, id: string, url: URL): Promise<void> => {
    try {
      if (!SessionId.safeParse(id).success) throw new AppError('VALIDATION_FAILED', 'invalid session id');
      const session = await deps.service.forProxy(id);
      assertProxyable(session);
      const method = req.method ?? 'GET';
      const bodyless = (method === 'GET' || method === 'HEAD') && !req.headers['content-length'] && !req.headers['transfer-encoding'];
      const spec = streamSpecFor(session, 'http', method, upstreamPath(url, id), requestHeaders(req.headers));
      const stream = deps.hub.openStream({ cluster: session.cluster, node: session.node }, spec, { bodyless });
      if (!bodyless) {
        req.on('data', (chunk: Buffer) => {
          if (!stream.write('data', chunk)) req.pause();
        });
        stream.onDrain = () => req.resume();
        req.on('end', () => stream.end());
      }
      res.on('close', () => {
        if (!res.writableFinished) stream.close(1001, 'client went away');
      });
      const head = await withTimeout(deps.clock, stream.head, HEAD_TIMEOUT_MS, () => stream.close(1011, 'no response head'));
      const headers: Record<string, string | string[]> = {};
      for (const [k, v] of head.headers) {
        if (RESPONSE_HOP_BY_HOP.has(k)) continue;
        const prev = headers[k];
        headers[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
      }
      if (spec.target === 'api' && head.status === 200 && isDevtoolsJsonPath(spec.path)) {
        const chunks: Uint8Array[] = [];
        stream.onData = (_k, p) => {
          chunks.push(p);
          stream.consumed(p.byteLength);
        };
        stream.onEnd = () => {
          const ws = publicBases(nodeRequestInfo(req), deps.publicUrl).ws;
          const body = Buffer.from(rewriteDevtoolsUrls(Buffer.concat(chunks).toString('utf8'), ws, id));
          res.writeHead(200, { ...headers, 'content-length': String(body.length) }).end(body);
        };
      } else {
        res.writeHead(head.status, headers);
        let owed = 0;
        res.on('drain', () => {
          stream.consumed(owed);
          owed = 0;
        });
        stream.onData = (_k, p) => {
          if (res.write(p)) stream.consumed(p.byteLength);
          else owed += p.byteLength;
        };
        stream.onEnd = () => res.end();
      }
      stream.onClose = (_code, _reason) => {
        if (!res.writableEnded) res.destroy();
      };
      stream.start();
    } catch (err) {
      const e = toAppError(err);
      if (e.status >= 500) deps.logger.warn('proxy request failed', { session: id, code: e.code, err: e.cause ?? e });
      if (res.headersSent) return void res.destroy();
      const body = JSON.stringify(errorBody(e));
      res.writeHead(e.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    }
  };
}

function requestHeaders(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || REQUEST_HOP_BY_HOP.has(k)) continue;
    out[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

function nodeRequestInfo(req: IncomingMessage): RequestInfo {
  return {
    url: `http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`,
    header: (name) => {
      const v = req.headers[name];
      return Array.isArray(v) ? v[0] : v;
    },
  };
}
