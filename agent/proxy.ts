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
import type { SessionManager } from './sessions.js';
import { spliceUpgrade } from './splice.js';

const CONNECT_TIMEOUT_MS = 10_000;
/**
 * A browser socket that drops without a close frame is either a browser that ended (closed by its
 * client: 1000; crashed: 1011) or a target that died alone (1011). The session learns which when the
 * browser process is seen to exit; this long the socket's client waits for that verdict.
 */
const ABNORMAL_CLOSE_GRACE_MS = 2000;

/** Carries streams opened by the router to the session's browser: HTTP exchanges and WebSockets. */
export function createProxyHandler(deps: { sessions: SessionManager; clock: Clock; logger: Logger }) {
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  return {
    onStreamOpen(stream: TunnelStream, spec: StreamSpec): void {
      const ep = deps.sessions.endpoints(spec.sessionId);
      if (!ep) return stream.reject(new AppError('SESSION_NOT_RUNNING', `session ${spec.sessionId} is not running on this agent`));
      const port = spec.target === 'ui' ? ep.uiPort : ep.apiPort;
      if (!port) return stream.reject(new AppError('NOT_FOUND', 'this session has no UI'));
      const touch = () => deps.sessions.touch(spec.sessionId);
      touch();
      let closeForSessionEnd = (code: number, reason: string) => stream.close(code, reason);
      const untrack = deps.sessions.trackStream(spec.sessionId, (code, reason) => closeForSessionEnd(code, reason));
      let verdictTimer: ReturnType<Clock['setTimeout']> | undefined;
      const abnormalClose = () => {
        verdictTimer ??= deps.clock.setTimeout(() => closeForSessionEnd(1011, 'browser connection lost'), ABNORMAL_CLOSE_GRACE_MS);
      };
      stream.onClose = () => {
        untrack();
        if (verdictTimer !== undefined) deps.clock.clearTimeout(verdictTimer);
      };
      const path = spec.kind !== 'http' && spec.target === 'api' && /^\/devtools\/browser\/?(\?.*)?$/.test(spec.path) ? ep.browserWsPath : spec.path;
      if (spec.kind === 'http') proxyHttp(stream, spec, ep.host, port, touch);
      else if (spec.kind === 'upgrade') closeForSessionEnd = spliceUpgrade(stream, { ...spec, path }, ep.host, port, { touch, abnormalClose });
      else proxyWs(stream, spec, `ws://${ep.host}:${port}${path}`, { touch, abnormalClose });
    },
    close(): void {
      httpAgent.destroy();
    },
  };

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
      maxPayload: 256 * 1024 * 1024,
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
