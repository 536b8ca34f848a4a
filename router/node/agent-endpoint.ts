import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { Clock } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';
import { corkPerTick } from '../../shared/node-socket.js';
import { ControlMessage, PROTOCOL_VERSION } from '../../shared/tunnel/protocol.js';
import type { InProcessHub } from '../tunnel/in-process-hub.js';
import { rejectUpgrade } from './upgrade.js';

export const AGENT_PATH = '/agent/connect';
const HELLO_TIMEOUT_MS = 5000;

/** Hashing first makes the comparison constant-time whatever the lengths are. */
export function tokensEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export function bearerToken(req: IncomingMessage): string | null {
  const h = req.headers.authorization;
  if (!h) return null;
  const m = /^Bearer\s+(.+)$/i.exec(h);
  return m ? m[1]!.trim() : null;
}

/** Accepts agent tunnels: token check, hello with protocol version, then the hub owns the socket. */
export function createAgentEndpoint(deps: { hub: InProcessHub; token: string; clock: Clock; logger: Logger }) {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
  return {
    handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
      const token = bearerToken(req);
      if (!token || !tokensEqual(token, deps.token)) {
        deps.logger.warn('agent rejected: bad token', { remote: req.socket.remoteAddress, hasToken: token !== null });
        return rejectUpgrade(socket, 401, 'UNAUTHORIZED', 'agent token missing or wrong');
      }
      wss.handleUpgrade(req, socket, head, (ws) => awaitHello(ws, req.socket.remoteAddress ?? ''));
    },
    close(): void {
      for (const c of wss.clients) c.terminate();
      wss.close();
    },
  };

  function awaitHello(ws: WebSocket, remote: string): void {
    const timer = deps.clock.setTimeout(() => ws.close(4002, 'no hello'), HELLO_TIMEOUT_MS);
    ws.once('message', (data: RawData, isBinary: boolean) => {
      deps.clock.clearTimeout(timer);
      const parsed = isBinary ? null : safeJson(data.toString());
      const msg = ControlMessage.safeParse(parsed);
      if (!msg.success || msg.data.t !== 'hello') {
        deps.logger.warn('agent rejected: first message is not a valid hello', { remote });
        return ws.close(4002, 'expected hello');
      }
      if (msg.data.v !== PROTOCOL_VERSION) {
        deps.logger.warn('agent rejected: protocol version', { remote, version: msg.data.v });
        return ws.close(4003, `protocol version ${msg.data.v} unsupported; router speaks ${PROTOCOL_VERSION}`);
      }
      const hello = msg.data;
      ws.send(JSON.stringify({ t: 'welcome', v: PROTOCOL_VERSION }));
      corkPerTick(ws);
      const peer = deps.hub.attach(
        { agentId: hello.agentId, cluster: hello.clusterId, node: hello.nodeName, runtime: hello.runtime, connectedAt: deps.clock.now() },
        { send: (d) => ws.send(d), close: (code, reason) => ws.close(code, reason) },
      );
      ws.on('message', (d: RawData, binary: boolean) => peer.receive(binary ? asBytes(d) : d.toString()));
      ws.on('close', (code, reason) => peer.handleTransportClosed('AGENT_DISCONNECTED', `agent tunnel closed (${code} ${reason.toString()})`));
      ws.on('error', (err) => deps.logger.warn('agent socket error', { err }));
    });
    ws.on('error', () => {});
  }
}

const safeJson = (s: string): unknown => {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
};

export function asBytes(d: RawData): Uint8Array {
  if (Array.isArray(d)) return Buffer.concat(d);
  if (d instanceof ArrayBuffer) return new Uint8Array(d);
  return d;
}
