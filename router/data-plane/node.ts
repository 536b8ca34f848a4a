import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { AppError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { asBytes, creditingWriter, messageSender, nodeHeaderPairs } from '../../shared/node-socket.js';
import type { TunnelStream } from '../../shared/tunnel/stream.js';
import { closeFrame, FrameBoundaryTracker } from '../../shared/ws-frames.js';
import { errorBody, errorHeaders, toAppError } from '../http/errors.js';
import { rejectUpgrade } from '../node/upgrade.js';
import { clientAddressOf, type RequestInfo } from '../public-url.js';
import type { DataPlane, ProxyTarget, TargetResolver, WebSocketMode } from './data-plane.js';
import { upgradeAnswerHeaders } from './headers.js';
import { rewriteDevtoolsUrls } from './target.js';
import { bridgeMessages } from './ws-bridge.js';

/**
 * The data plane on Node's own sockets. HTTP goes straight from IncomingMessage to ServerResponse
 * (building web Request/Response objects per request cost more than the tunnel itself); WebSockets
 * are spliced as raw bytes (`splice`, fastest) or bridged message by message (`messages`, what the
 * Workers runtime must do). The browser side is opened first, and only when it accepted is the
 * client's upgrade completed, so every failure is an HTTP error with a JSON body.
 */
const SHUTDOWN_REASON = 'router shutting down';
/** How long a client gets to finish its side of a close before its socket is destroyed. */
const CLOSE_GRACE_MS = 1000;

export function nodeDataPlane(dp: DataPlane, opts: { mode: WebSocketMode; maxMessageBytes: number; logger: Logger; resolve: TargetResolver; trustProxy: boolean }) {
  // In `messages` mode a message is held whole before it moves on: bounded, 1009 beyond (spliced bytes
  // move in credited chunks and are bounded where the socket ends, at the agent or the browser).
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: opts.maxMessageBytes, skipUTF8Validation: true });
  /** Spliced client sockets, with where their outgoing bytes stand (a close frame may go in only between frames). */
  const spliced = new Map<Socket, { tracker: FrameBoundaryTracker; stream: TunnelStream }>();
  let draining = false;
  const refuseWhileDraining = () => {
    if (draining) throw new AppError('ROUTER_DRAINING', 'this router replica is shutting down; retry, another replica takes the request', { retryAfterSec: 1 });
  };

  async function handleRequest(req: IncomingMessage, res: ServerResponse, id: string, url: URL): Promise<void> {
    try {
      refuseWhileDraining();
      const t = await opts.resolve(id, url, nodeRequestInfo(req, opts.trustProxy), false);
      const method = req.method ?? 'GET';
      const bodyless = (method === 'GET' || method === 'HEAD') && !req.headers['content-length'] && !req.headers['transfer-encoding'];
      const answer = await dp.http(t, method, nodeHeaderPairs(req.headers), bodyless ? null : (stream) => pumpNodeBody(req, stream));
      const { stream } = answer;
      if (req.socket.destroyed) return stream.close(1001, 'client went away');
      res.on('close', () => {
        if (!res.writableFinished) stream.close(1001, 'client went away');
      });
      stream.onClose = () => {
        if (!res.writableEnded) res.destroy();
      };
      const headers = groupHeaders(answer.headers);
      if (answer.rewrite) {
        const chunks: Uint8Array[] = [];
        stream.onData = (_k, p) => {
          chunks.push(p);
          stream.consumed(p.byteLength);
        };
        stream.onEnd = () => {
          const body = Buffer.from(rewriteDevtoolsUrls(Buffer.concat(chunks).toString('utf8'), t.wsBase, id, t.connectToken));
          res.writeHead(answer.status, { ...headers, 'content-length': String(body.length) }).end(body);
        };
      } else {
        res.writeHead(answer.status, headers);
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
      stream.start();
    } catch (err) {
      const e = toAppError(err);
      if (e.status >= 500) opts.logger.warn('proxy request failed', { session: id, code: e.code, err: e.cause ?? e });
      if (res.headersSent) return void res.destroy();
      const body = JSON.stringify(errorBody(e));
      res.writeHead(e.status, { ...errorHeaders(e), 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    }
  }

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, id: string, url: URL): Promise<void> {
    socket.on('error', () => {});
    try {
      refuseWhileDraining();
      const t = await opts.resolve(id, url, nodeRequestInfo(req, opts.trustProxy), true);
      const { stream, head: answer } = await dp.webSocket(t, nodeHeaderPairs(req.headers), opts.mode, opts.mode === 'splice' ? head : undefined);
      if (socket.destroyed) return stream.close(1001, 'client went away');
      if (opts.mode === 'splice') return splice(socket as Socket, stream, answer.headers);
      if (answer.protocol) req.headers['sec-websocket-protocol'] = answer.protocol;
      wss.handleUpgrade(req, socket, head, (ws) => bridgeNodeSocket(ws, socket as Socket, stream, t));
    } catch (err) {
      const e = toAppError(err);
      if (e.status >= 500) opts.logger.warn('websocket proxy failed', { session: id, code: e.code, err: e.cause ?? e });
      rejectUpgrade(socket, e);
    }
  }

  function bridgeNodeSocket(ws: WebSocket, socket: Socket, stream: TunnelStream, t: ProxyTarget): void {
    const sender = messageSender(ws, socket);
    const bridge = bridgeMessages({ send: sender.sendCredited, close: (code, reason) => ws.close(code, reason), pause: () => ws.pause(), resume: () => ws.resume() }, stream);
    ws.on('message', (data: RawData, isBinary: boolean) => bridge.fromClient(asBytes(data), isBinary));
    ws.on('close', (code, reason) => bridge.clientClosed(code, reason.toString()));
    ws.on('error', (err) => opts.logger.debug('client socket error', { err, session: t.session.id }));
  }

  /** Completes the client's handshake with the browser's answer, then moves bytes both ways. */
  function splice(socket: Socket, stream: TunnelStream, answerHeaders: Array<[string, string]>): void {
    const tracker = new FrameBoundaryTracker();
    spliced.set(socket, { tracker, stream });
    const lines = ['HTTP/1.1 101 Switching Protocols', ...upgradeAnswerHeaders(answerHeaders).map(([k, v]) => `${k}: ${v}`)];
    socket.setNoDelay(true);
    socket.write(lines.join('\r\n') + '\r\n\r\n');
    const write = creditingWriter(socket);
    const consumed = (n: number) => stream.consumed(n);
    stream.onData = (_kind, payload) => {
      tracker.advance(payload);
      write(payload, consumed);
    };
    stream.onDrain = () => socket.resume();
    stream.onClose = (_code, reason, byPeer) => {
      // The agent closes with a frame of its own; when the tunnel itself failed, say so here.
      if (!byPeer && !socket.destroyed && tracker.atBoundary && !tracker.sawClose) socket.write(closeFrame(1011, reason ?? 'tunnel closed'));
      socket.end();
      // A socket paused mid-message (the far end closed while the client was still sending, e.g.
      // 1009) must read on, or it never sees the client's end and never closes.
      socket.resume();
    };
    socket.on('data', (chunk: Buffer) => {
      if (stream.isClosed) return;
      if (!stream.write('data', chunk)) socket.pause();
    });
    socket.on('close', () => {
      spliced.delete(socket);
      stream.close(1001, 'client went away');
    });
    stream.start();
  }

  return {
    handleRequest,
    handleUpgrade,
    /** Refuses new proxied requests and WebSockets (ROUTER_DRAINING, 503 with Retry-After); open ones go on. */
    drain(): void {
      draining = true;
    },
    /** Closes every proxied WebSocket still open with 1001 and a reason, the agent's side too. */
    close(): void {
      draining = true;
      for (const c of wss.clients) c.close(1001, SHUTDOWN_REASON);
      wss.close();
      for (const [socket, { tracker, stream }] of spliced) {
        if (tracker.atBoundary && !tracker.sawClose && !socket.destroyed) socket.write(closeFrame(1001, SHUTDOWN_REASON));
        stream.close(1001, SHUTDOWN_REASON);
        socket.end();
        // A client that never answers the close is not waited for.
        setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
      }
    },
  };
}

function pumpNodeBody(req: IncomingMessage, stream: TunnelStream): void {
  req.on('data', (chunk: Buffer) => {
    if (!stream.write('data', chunk)) req.pause();
  });
  stream.onDrain = () => req.resume();
  req.on('end', () => stream.end());
  req.on('error', () => stream.close(1011, 'client request body failed'));
}

function groupHeaders(pairs: Array<[string, string]>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of pairs) {
    const prev = out[k];
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

/** A request as the router needs to see it, read from Node's own header object (building a web
 * `Headers` for it costs more than the whole status route). A class, not closures: it is made for
 * every request. */
class NodeRequestInfo implements RequestInfo {
  constructor(
    private readonly req: IncomingMessage,
    private readonly trustProxy: boolean,
  ) {}

  get url(): string {
    return `http://${this.req.headers.host ?? 'localhost'}${this.req.url ?? '/'}`;
  }

  get method(): string {
    return this.req.method ?? 'GET';
  }

  header(name: string): string | undefined {
    const v = this.req.headers[name];
    return Array.isArray(v) ? v[0] : v;
  }

  get clientAddress(): string {
    return clientAddressOf(this.req.socket.remoteAddress, () => this.header('x-forwarded-for'), this.trustProxy);
  }
}

export const nodeRequestInfo = (req: IncomingMessage, trustProxy: boolean): RequestInfo => new NodeRequestInfo(req, trustProxy);
