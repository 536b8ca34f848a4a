import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData } from 'ws';
import type { Clock } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';
import { corkPerTick, creditingSender, creditingWriter } from '../../shared/node-socket.js';
import { SessionId } from '../../shared/session.js';
import type { TunnelStream } from '../../shared/tunnel/stream.js';
import { closeFrame, FrameBoundaryTracker } from '../../shared/ws-frames.js';
import { toAppError } from '../http/errors.js';
import { withTimeout } from '../proxy/http-proxy.js';
import { assertProxyable, forwardableHeaders, streamSpecFor, upstreamPath } from '../proxy/target.js';
import { bridgeWebSocket } from '../proxy/ws-bridge.js';
import type { SessionService } from '../sessions/service.js';
import type { InProcessHub } from '../tunnel/in-process-hub.js';
import { asBytes } from './agent-endpoint.js';
import { rejectUpgrade } from './upgrade.js';

const PROXY_PATH = /^\/sessions\/([^/]+)\/proxy(\/.*)?$/;
const OPEN_TIMEOUT_MS = 15_000;
/** What the browser's handshake answer may pass on to the client in splice mode. */
const UPGRADE_RESPONSE_HEADERS = new Set(['upgrade', 'connection', 'sec-websocket-accept', 'sec-websocket-protocol', 'sec-websocket-extensions']);

export const isProxyPath = (pathname: string): boolean => PROXY_PATH.test(pathname);
export const proxySessionId = (pathname: string): string | null => PROXY_PATH.exec(pathname)?.[1] ?? null;

/** splice: raw WebSocket bytes through the tunnel (Node's default, fastest); messages: frame by frame,
 * as the Workers runtime must do it. */
export type WsProxyMode = 'splice' | 'messages';

/**
 * WebSocket (CDP) proxy on Node: the browser side is opened through the tunnel first, and only when it
 * accepted is the client's upgrade completed, so every failure is an HTTP error with a JSON body.
 */
export function createWsProxy(deps: { service: SessionService; hub: InProcessHub; clock: Clock; logger: Logger; mode: WsProxyMode }) {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 256 * 1024 * 1024, skipUTF8Validation: true });
  const spliced = new Set<Socket>();
  return {
    async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
      socket.on('error', () => {});
      const url = new URL(req.url ?? '/', 'http://router.invalid');
      const id = PROXY_PATH.exec(url.pathname)?.[1] ?? '';
      try {
        if (!SessionId.safeParse(id).success) throw toAppError(new Error('invalid session id'));
        const session = await deps.service.forProxy(id);
        assertProxyable(session);
        const headers = new Headers(req.headers as Record<string, string>);
        const path = upstreamPath(url, id);
        const placement = { cluster: session.cluster, node: session.node };
        if (deps.mode === 'splice') {
          const spec = streamSpecFor(session, 'upgrade', 'GET', path, spliceHeaders(headers));
          const stream = deps.hub.openStream(placement, spec);
          if (head.length) stream.write('data', head);
          const answer = await withTimeout(deps.clock, stream.head, OPEN_TIMEOUT_MS, () => stream.close(1011, 'open timed out'));
          if (socket.destroyed) return stream.close(1001, 'client went away');
          splice(socket as Socket, stream, answer.headers);
          return;
        }
        const spec = streamSpecFor(session, 'ws', 'GET', path, forwardableHeaders(headers));
        const stream = deps.hub.openStream(placement, spec);
        const answer = await withTimeout(deps.clock, stream.head, OPEN_TIMEOUT_MS, () => stream.close(1011, 'open timed out'));
        if (socket.destroyed) return stream.close(1001, 'client went away');
        if (answer.protocol) req.headers['sec-websocket-protocol'] = answer.protocol;
        wss.handleUpgrade(req, socket, head, (ws) => {
          corkPerTick(ws);
          const bridge = bridgeWebSocket({ send: creditingSender(ws), close: (code, reason) => ws.close(code, reason), pause: () => ws.pause(), resume: () => ws.resume() }, stream);
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
      for (const s of spliced) s.destroy();
    },
  };

  /** Completes the client's handshake with the browser's answer, then moves bytes both ways. */
  function splice(socket: Socket, stream: TunnelStream, answerHeaders: [string, string][]): void {
    spliced.add(socket);
    const lines = ['HTTP/1.1 101 Switching Protocols'];
    for (const [k, v] of answerHeaders) if (UPGRADE_RESPONSE_HEADERS.has(k)) lines.push(`${k}: ${v}`);
    socket.setNoDelay(true);
    socket.write(lines.join('\r\n') + '\r\n\r\n');
    const tracker = new FrameBoundaryTracker();
    const write = creditingWriter(socket);
    stream.onData = (_kind, payload) => {
      tracker.advance(payload);
      write(payload, (n) => stream.consumed(n));
    };
    stream.onDrain = () => socket.resume();
    stream.onClose = (_code, reason, byPeer) => {
      spliced.delete(socket);
      // The agent closes with a frame of its own; when the tunnel itself failed, say so here.
      if (!byPeer && !socket.destroyed && tracker.atBoundary) socket.write(closeFrame(1011, reason ?? 'tunnel closed'));
      socket.end();
    };
    socket.on('data', (chunk: Buffer) => {
      if (!stream.write('data', chunk)) socket.pause();
    });
    socket.on('close', () => {
      spliced.delete(socket);
      stream.close(1001, 'client went away');
    });
    stream.start();
  }
}

/** Splice mode keeps the handshake headers: the browser answers the client's own key. */
function spliceHeaders(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    if (name === 'host' || name === 'connection' || name === 'upgrade' || name.startsWith('proxy-')) return;
    out[name] = value;
  });
  return out;
}
