import { Agent as HttpAgent, request } from 'node:http';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { AppError } from '../shared/errors.js';
import { messageSender, nodeHeaderPairs, zeroMask, type MessageSender } from '../shared/node-socket.js';
import type { Clock } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import type { StreamSpec } from '../shared/tunnel/protocol.js';
import type { TunnelStream } from '../shared/tunnel/stream.js';
import { sendableCloseCode } from '../shared/ws-frames.js';
import type { DevtoolsMux, MuxConnection } from './runtime/devtools-mux.js';
import { devtoolsFromCdp, loadProtocol, servesDevtoolsJson, type DevtoolsAnswer } from './runtime/devtools.js';
import type { SessionManager } from './sessions.js';
import { chainClose, spliceUpgrade } from './splice.js';
import { acceptWebSocket, type WsEndpoint } from './ws-endpoint.js';

const CONNECT_TIMEOUT_MS = 10_000;
/**
 * A browser socket that drops without a close frame is either a browser that ended (closed by its
 * client: 1000; crashed: 1011) or a target that died alone (1011). The session learns which when the
 * browser process is seen to exit; this long the socket's client waits for that verdict.
 */
const ABNORMAL_CLOSE_GRACE_MS = 2000;

/** Carries streams opened by the router to the session's browser: HTTP exchanges and WebSockets. */
export function createProxyHandler(deps: { sessions: SessionManager; clock: Clock; logger: Logger; maxWsMessageBytes: number; maxWebSocketsPerSession: number }) {
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  let protocolJson: Promise<unknown> | undefined;
  const protocol = () => (protocolJson ??= loadProtocol());
  return {
    onStreamOpen(stream: TunnelStream, spec: StreamSpec): void {
      const browser = deps.sessions.browser(spec.sessionId);
      if (!browser) return stream.reject(new AppError('SESSION_NOT_RUNNING', `session ${spec.sessionId} is not running on this agent`));
      // A browser on a pipe serves its DevTools through the agent; anything else is reached at a port.
      const devtools = spec.target === 'api' ? browser.devtools : undefined;
      const ep = browser.endpoints;
      const port = spec.target === 'ui' ? ep?.uiPort : ep?.apiPort;
      if (!devtools && (!ep || !port)) return stream.reject(new AppError('NOT_FOUND', spec.target === 'ui' ? 'this session has no UI' : 'this session has no browser port'));
      // A browser on a pipe is held to the cap by its multiplexer, which counts connections still attaching.
      if (spec.kind !== 'http' && !devtools) {
        const open = deps.sessions.openWebSockets(spec.sessionId);
        if (open >= deps.maxWebSocketsPerSession) return stream.reject(new AppError('TOO_MANY_CONNECTIONS', `this session already has ${open} open WebSockets`));
      }
      const touch = () => deps.sessions.touch(spec.sessionId);
      touch();
      let closeForSessionEnd = (code: number, reason: string) => stream.close(code, reason);
      const untrack = deps.sessions.trackStream(spec.sessionId, (code, reason) => closeForSessionEnd(code, reason), spec.kind !== 'http');
      let verdictTimer: ReturnType<Clock['setTimeout']> | undefined;
      const abnormalClose = () => {
        verdictTimer ??= deps.clock.setTimeout(() => closeForSessionEnd(1011, 'browser connection lost'), ABNORMAL_CLOSE_GRACE_MS);
      };
      stream.onClose = () => {
        untrack();
        if (verdictTimer !== undefined) deps.clock.clearTimeout(verdictTimer);
      };
      if (devtools) {
        if (spec.kind === 'http') serveDevtoolsHttp(stream, (path) => devtools.http(spec.method, path), spec.path);
        else closeForSessionEnd = serveDevtoolsWs(stream, spec, devtools, { touch, abnormalClose });
        return;
      }
      const { host } = ep!;
      // An image without DevTools' HTTP endpoints (steel): the agent makes them from its CDP.
      if (spec.kind === 'http' && spec.target === 'api' && !servesDevtoolsJson(ep!) && /^\/json(\/|\?|$)/.test(spec.path)) {
        const cdpUrl = `ws://${host}:${port}${ep!.browserWsPath ?? '/'}`;
        return serveDevtoolsHttp(
          stream,
          async (path) => (await devtoolsFromCdp(path, cdpUrl, protocol, CONNECT_TIMEOUT_MS)) ?? { status: 404, body: 'not a DevTools endpoint' },
          spec.path,
        );
      }
      const path = spec.kind !== 'http' && spec.target === 'api' && /^\/devtools\/browser\/?(\?.*)?$/.test(spec.path) ? (ep!.browserWsPath ?? spec.path) : spec.path;
      if (spec.kind === 'http') proxyHttp(stream, spec, host, port!, touch);
      else if (spec.kind === 'upgrade') closeForSessionEnd = spliceUpgrade(stream, { ...spec, path }, host, port!, { touch, abnormalClose });
      else proxyWs(stream, spec, `ws://${host}:${port}${path}`, { touch, abnormalClose });
    },
    close(): void {
      httpAgent.destroy();
    },
  };

  /** `/json/*` answered by the agent: of a browser reached by its pipe, or made from an image's CDP. */
  function serveDevtoolsHttp(stream: TunnelStream, answer: (path: string) => Promise<DevtoolsAnswer>, path: string): void {
    stream.onData = (_kind, payload) => stream.consumed(payload.byteLength);
    stream.start();
    answer(path).then(
      ({ status, body }) => {
        const text = typeof body === 'string';
        stream.accept({ status, headers: [['content-type', text ? 'text/plain; charset=UTF-8' : 'application/json; charset=UTF-8']] });
        stream.write('data', Buffer.from(text ? body : JSON.stringify(body)));
        stream.end();
      },
      (err: Error) => stream.reject(new AppError('BROWSER_UNREACHABLE', `the browser did not answer: ${err.message}`)),
    );
  }

  /**
   * A DevTools WebSocket of a browser reached by its pipe: the agent ends the client's WebSocket and
   * gives it its own session on the pipe. Returns the session-end closer.
   */
  function serveDevtoolsWs(
    stream: TunnelStream,
    spec: StreamSpec,
    devtools: DevtoolsMux,
    { touch, abnormalClose }: { touch: () => void; abnormalClose: () => void },
  ): (code: number, reason: string) => void {
    let endpoint: WsEndpoint | null = null;
    let connection: MuxConnection | null = null;
    // What the browser says between the attach and the 101 waits for the endpoint.
    const early: Buffer[] = [];
    const client = {
      send(message: Buffer): boolean {
        touch();
        if (endpoint) return endpoint.send(message);
        early.push(Buffer.from(message));
        return true;
      },
      onceWritable(fn: () => void): void {
        if (endpoint) endpoint.onceWritable(fn);
        else fn();
      },
    };
    const forgetPipe = devtools.pipe.onClose(() => abnormalClose());
    stream.onClose = chainClose(stream.onClose, () => {
      forgetPipe();
      connection?.close();
    });
    const refuse = (err: unknown) => stream.reject(err instanceof AppError ? err : new AppError('BROWSER_UNREACHABLE', `browser unreachable: ${(err as Error).message}`));
    devtools.connect(spec.path, client).then((conn) => {
      connection = conn;
      if (stream.isClosed) return conn.close();
      try {
        endpoint = acceptWebSocket(
          stream,
          spec,
          {
            onMessage(data, consumed) {
              touch();
              if (conn.receive(data)) consumed();
              else conn.onceWritable(consumed);
            },
            onClose: () => conn.close(),
          },
          { maxPayload: deps.maxWsMessageBytes },
        );
      } catch (err) {
        conn.close();
        return refuse(err);
      }
      if (!endpoint) return conn.close();
      for (const m of early.splice(0)) endpoint.send(m);
    }, refuse);
    return (code, reason) => (endpoint ? endpoint.close(code, reason) : stream.close(code, reason));
  }

  function proxyHttp(stream: TunnelStream, spec: StreamSpec, host: string, port: number, touch: () => void): void {
    const headers: Record<string, string> = { ...spec.headers, host: `${host}:${port}` };
    const req = request({ host, port, method: spec.method, path: spec.path, headers, agent: httpAgent, timeout: CONNECT_TIMEOUT_MS });
    let responded = false;
    const chain = stream.onClose;
    stream.onClose = (code, reason, byPeer) => {
      chain?.(code, reason, byPeer);
      if (!req.destroyed && code !== undefined) req.destroy();
    };
    stream.onData = (_kind, payload) => {
      touch();
      if (req.write(payload)) stream.consumed(payload.byteLength);
      else req.once('drain', () => stream.consumed(payload.byteLength));
    };
    stream.onEnd = () => req.end();
    req.on('timeout', () => req.destroy(new Error('browser did not answer in time')));
    req.on('error', (err) => {
      if (!responded) stream.reject(new AppError('BROWSER_UNREACHABLE', `browser unreachable: ${err.message}`));
      else stream.close(1011, 'browser connection failed');
    });
    req.on('response', (res) => {
      responded = true;
      req.setTimeout(0);
      stream.accept({ status: res.statusCode ?? 502, headers: nodeHeaderPairs(res.headers) });
      stream.onDrain = () => res.resume();
      res.on('data', (chunk: Buffer) => {
        touch();
        if (!stream.write('data', chunk)) res.pause();
      });
      res.on('end', () => stream.end());
      res.on('error', () => stream.close(1011, 'browser response failed'));
    });
    stream.start();
  }

  function proxyWs(stream: TunnelStream, spec: StreamSpec, url: string, { touch, abnormalClose }: { touch: () => void; abnormalClose: () => void }): void {
    // Subprotocols go to `ws` as such; it writes the header itself.
    const { 'sec-websocket-protocol': protocolHeader, ...headers } = spec.headers;
    const protocols = protocolHeader
      ?.split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    const ws = new WebSocket(url, protocols, {
      perMessageDeflate: false,
      handshakeTimeout: CONNECT_TIMEOUT_MS,
      headers,
      maxPayload: deps.maxWsMessageBytes,
      skipUTF8Validation: true,
      generateMask: zeroMask,
    });
    let socket: Socket | null = null;
    let sender: MessageSender | null = null;
    let open = false;
    const chain = stream.onClose;
    stream.onClose = (code, reason, byPeer) => {
      chain?.(code, reason, byPeer);
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else if (ws.readyState === WebSocket.OPEN) ws.close(sendableCloseCode(code), reason ?? '');
    };
    stream.onData = (kind, payload) => {
      touch();
      sender?.sendCredited(payload, kind !== 'text', () => stream.consumed(payload.byteLength));
    };
    stream.onDrain = () => ws.resume();
    ws.on('upgrade', (res) => (socket = res.socket as Socket));
    ws.on('open', () => {
      open = true;
      sender = messageSender(ws, socket!);
      stream.accept({ status: 101, headers: [], protocol: ws.protocol || undefined });
      stream.start();
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      touch();
      if (!stream.write(isBinary ? 'binary' : 'text', data)) ws.pause();
    });
    ws.on('close', (code, reason) => (code === 1006 ? abnormalClose() : stream.close(sendableCloseCode(code), reason.toString())));
    ws.on('unexpected-response', (_req, res) => {
      stream.reject(new AppError('BROWSER_UNREACHABLE', `browser refused the WebSocket (${res.statusCode})`));
      ws.terminate();
    });
    ws.on('error', (err) => {
      if (!open) stream.reject(new AppError('BROWSER_UNREACHABLE', `browser unreachable: ${err.message}`));
      else deps.logger.debug('browser socket error', { err, session: spec.sessionId });
    });
  }
}
