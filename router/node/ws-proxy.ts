import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData } from 'ws';
import type { Clock } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';
import { SessionId } from '../../shared/session.js';
import { toAppError } from '../http/errors.js';
import { withTimeout } from '../proxy/http-proxy.js';
import { assertProxyable, forwardableHeaders, streamSpecFor, upstreamPath } from '../proxy/target.js';
import { bridgeWebSocket } from '../proxy/ws-bridge.js';
import type { SessionService } from '../sessions/service.js';
import type { TunnelHub } from '../tunnel/hub.js';
import { asBytes } from './agent-endpoint.js';
import { rejectUpgrade } from './upgrade.js';

const PROXY_PATH = /^\/sessions\/([^/]+)\/proxy(\/.*)?$/;
const OPEN_TIMEOUT_MS = 15_000;

export const isProxyPath = (pathname: string): boolean => PROXY_PATH.test(pathname);

/**
 * WebSocket (CDP) proxy on Node: the browser side is opened through the tunnel first, and only when it
 * accepted is the client's upgrade completed, so every failure is an HTTP error with a JSON body.
 */
export function createWsProxy(deps: { service: SessionService; hub: TunnelHub; clock: Clock; logger: Logger }) {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
  return {
    async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
      socket.on('error', () => {});
      const url = new URL(req.url ?? '/', 'http://router.invalid');
      const id = PROXY_PATH.exec(url.pathname)?.[1] ?? '';
      try {
        if (!SessionId.safeParse(id).success) throw toAppError(new Error('invalid session id'));
        const session = await deps.service.require(id);
        assertProxyable(session);
        const headers = forwardableHeaders(new Headers(req.headers as Record<string, string>));
        const spec = streamSpecFor(session, 'ws', 'GET', upstreamPath(url, id), headers);
        const stream = deps.hub.openStream({ cluster: session.cluster, node: session.node }, spec);
        const headResult = await withTimeout(deps.clock, stream.head, OPEN_TIMEOUT_MS, () => stream.close(1011, 'open timed out'));
        if (socket.destroyed) return stream.close(1001, 'client went away');
        if (headResult.status !== 101) {
          stream.close(1011, 'not upgraded');
          return rejectUpgrade(socket, 502, 'BROWSER_UNREACHABLE', `browser answered ${headResult.status} instead of upgrading`);
        }
        if (headResult.protocol) req.headers['sec-websocket-protocol'] = headResult.protocol;
        wss.handleUpgrade(req, socket, head, (ws) => {
          const bridge = bridgeWebSocket(
            {
              send: (payload, binary, onSent) => ws.send(payload, { binary }, onSent),
              close: (code, reason) => ws.close(code, reason),
              pause: () => ws.pause(),
              resume: () => ws.resume(),
            },
            stream,
          );
          ws.on('message', (data: RawData, isBinary: boolean) => bridge.fromClient(asBytes(data), isBinary));
          ws.on('close', (code, reason) => bridge.clientClosed(code, reason.toString()));
          ws.on('error', (err) => deps.logger.debug('client socket error', { err, session: id }));
        });
      } catch (err) {
        const e = toAppError(err);
        if (e.status >= 500) deps.logger.warn('websocket proxy failed', { session: id, code: e.code, err: e.cause ?? e });
        rejectUpgrade(socket, e.status, e.code, e.message);
      }
    },
    close(): void {
      for (const c of wss.clients) c.close(1001, 'router shutting down');
      wss.close();
    },
  };
}
