import { Agent as HttpAgent, request, type IncomingHttpHeaders } from 'node:http';
import WebSocket from 'ws';
import { corkPerTick, creditingSender, zeroMask } from '../shared/node-socket.js';
import type { Logger } from '../shared/logger.js';
import type { StreamSpec } from '../shared/tunnel/protocol.js';
import type { TunnelStream } from '../shared/tunnel/stream.js';
import type { SessionManager } from './sessions.js';
import { spliceUpgrade } from './splice.js';

const CONNECT_TIMEOUT_MS = 10_000;
/** Chromium refuses DevTools WebSockets that carry an Origin unless allowed by flag; clients of a CDP
 * proxy are not pages, so the header carries no meaning here. */
const DROP_UPSTREAM = new Set(['origin', 'sec-websocket-protocol']);

/** Carries streams opened by the router to the session's browser: HTTP exchanges and WebSockets. */
export function createProxyHandler(deps: { sessions: SessionManager; logger: Logger }) {
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  return {
    onStreamOpen(stream: TunnelStream, spec: StreamSpec): void {
      const ep = deps.sessions.endpoints(spec.sessionId);
      if (!ep) return stream.reject({ code: 'SESSION_NOT_RUNNING', message: `session ${spec.sessionId} is not running on this agent`, status: 409 });
      const port = spec.target === 'ui' ? ep.uiPort : ep.apiPort;
      if (!port) return stream.reject({ code: 'NOT_FOUND', message: 'this session has no UI', status: 404 });
      const touch = () => deps.sessions.touch(spec.sessionId);
      touch();
      let closeForSessionEnd = (code: number, reason: string) => stream.close(code, reason);
      const untrack = deps.sessions.trackStream(spec.sessionId, (code, reason) => closeForSessionEnd(code, reason));
      stream.onClose = () => untrack();
      const path = spec.kind !== 'http' && spec.target === 'api' && /^\/devtools\/browser\/?(\?.*)?$/.test(spec.path) ? ep.browserWsPath : spec.path;
      if (spec.kind === 'http') proxyHttp(stream, spec, ep.host, port, touch);
      else if (spec.kind === 'upgrade') closeForSessionEnd = spliceUpgrade(stream, { ...spec, path }, ep.host, port, touch);
      else proxyWs(stream, spec, `ws://${ep.host}:${port}${path}`, touch);
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
      if (!responded) stream.reject({ code: 'BROWSER_UNREACHABLE', message: `browser unreachable: ${err.message}`, status: 502 });
      else stream.close(1011, 'browser connection failed');
    });
    req.on('response', (res) => {
      responded = true;
      req.setTimeout(0);
      stream.accept({ status: res.statusCode ?? 502, headers: headerPairs(res.headers) });
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

  function proxyWs(stream: TunnelStream, spec: StreamSpec, url: string, touch: () => void): void {
    const headers = Object.fromEntries(Object.entries(spec.headers).filter(([k]) => !DROP_UPSTREAM.has(k)));
    const protocols = spec.headers['sec-websocket-protocol']?.split(',').map((p) => p.trim()).filter(Boolean);
    const ws = new WebSocket(url, protocols, { perMessageDeflate: false, handshakeTimeout: CONNECT_TIMEOUT_MS, headers, maxPayload: 256 * 1024 * 1024, skipUTF8Validation: true, generateMask: zeroMask });
    let send: ReturnType<typeof creditingSender> | null = null;
    let open = false;
    const chain = stream.onClose;
    stream.onClose = (code, reason, byPeer) => {
      chain?.(code, reason, byPeer);
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else if (ws.readyState === WebSocket.OPEN) ws.close(validClose(code), reason ?? '');
    };
    stream.onData = (kind, payload) => {
      touch();
      send?.(payload, kind !== 'text', () => stream.consumed(payload.byteLength));
    };
    stream.onDrain = () => ws.resume();
    ws.on('open', () => {
      open = true;
      corkPerTick(ws);
      send = creditingSender(ws);
      stream.accept({ status: 101, headers: [], protocol: ws.protocol || undefined });
      stream.start();
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      touch();
      if (!stream.write(isBinary ? 'binary' : 'text', data)) ws.pause();
    });
    ws.on('close', (code, reason) => stream.close(validClose(code), reason.toString()));
    ws.on('unexpected-response', (_req, res) => {
      stream.reject({ code: 'BROWSER_UNREACHABLE', message: `browser refused the WebSocket (${res.statusCode})`, status: 502 });
      ws.terminate();
    });
    ws.on('error', (err) => {
      if (!open) stream.reject({ code: 'BROWSER_UNREACHABLE', message: `browser unreachable: ${err.message}`, status: 502 });
      else deps.logger.debug('browser socket error', { err, session: spec.sessionId });
    });
  }
}

function headerPairs(h: IncomingHttpHeaders): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) out.push([k, one]);
  }
  return out;
}

const validClose = (code?: number): number =>
  code !== undefined && (code === 1000 || (code >= 1001 && code <= 1014 && ![1004, 1005, 1006].includes(code)) || (code >= 3000 && code <= 4999)) ? code : 1000;
