import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { backoffDelay, sleep, type Clock } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import { messageSender, zeroMask } from '../shared/node-socket.js';
import { TunnelPeer, type RpcHandlers } from '../shared/tunnel/peer.js';
import { MAX_TUNNEL_MESSAGE_BYTES } from '../shared/tunnel/handshake.js';
import { ControlMessage, PROTOCOL_VERSION, TunnelClose, type Hello, type StreamSpec } from '../shared/tunnel/protocol.js';
import type { TunnelStream } from '../shared/tunnel/stream.js';

export type TunnelClientDeps = {
  url: string;
  token: string;
  hello: Omit<Hello, 't' | 'v'>;
  clock: Clock;
  logger: Logger;
  handlers: RpcHandlers;
  onStreamOpen: (stream: TunnelStream, spec: StreamSpec) => void;
  /** Called after each successful handshake; reconciliation and report replay start here. */
  onConnected: (peer: TunnelPeer) => void;
  backoff?: { baseMs: number; capMs: number };
  heartbeatMs?: number;
};

const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Keeps one tunnel to the router up: dial out, hello, serve, and redial with capped jittered backoff. */
export class TunnelClient {
  private peer: TunnelPeer | null = null;
  private socket: WebSocket | null = null;
  private readonly stopped = new AbortController();
  private loop: Promise<void> | null = null;

  constructor(private readonly deps: TunnelClientDeps) {}

  get current(): TunnelPeer | null {
    return this.peer && !this.peer.isClosed ? this.peer : null;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped.abort(new Error('agent stopping'));
    this.peer?.close(1001, 'agent shutting down');
    this.socket?.terminate();
    await this.loop;
  }

  /** Drops the current connection abruptly (as a network failure would); the loop redials. */
  disconnect(): void {
    this.socket?.terminate();
  }

  private async run(): Promise<void> {
    const { baseMs, capMs } = this.deps.backoff ?? { baseMs: 250, capMs: 15_000 };
    let attempt = 0;
    while (!this.stopped.signal.aborted) {
      try {
        await this.connectOnce(() => (attempt = 0));
      } catch (err) {
        this.deps.logger.warn('tunnel connect failed', { err, attempt });
      }
      if (this.stopped.signal.aborted) break;
      const delay = backoffDelay(attempt++, baseMs, capMs);
      await sleep(this.deps.clock, delay, this.stopped.signal).catch(() => {});
    }
  }

  /** Resolves when the connection that this attempt made has closed again. */
  private connectOnce(onEstablished: () => void): Promise<void> {
    const { deps } = this;
    return new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(deps.url, {
        headers: { authorization: `Bearer ${deps.token}` },
        perMessageDeflate: false,
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
        maxPayload: MAX_TUNNEL_MESSAGE_BYTES,
        skipUTF8Validation: true,
        generateMask: zeroMask,
      });
      this.socket = ws;
      let socket: Socket | null = null;
      let peer: TunnelPeer | null = null;
      const welcomeTimer = deps.clock.setTimeout(() => ws.terminate(), HANDSHAKE_TIMEOUT_MS);
      ws.on('unexpected-response', (_req, res) => {
        deps.clock.clearTimeout(welcomeTimer);
        ws.terminate();
        reject(new Error(res.statusCode === 401 ? 'router rejected the agent token (401)' : `router answered ${res.statusCode} to the tunnel upgrade`));
      });
      ws.on('upgrade', (res) => (socket = res.socket as Socket));
      ws.on('open', () => ws.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, ...deps.hello } satisfies Hello)));
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (peer) return peer.receive(isBinary ? data : data.toString());
        let msg: ReturnType<typeof ControlMessage.safeParse> | null = null;
        try {
          msg = ControlMessage.safeParse(JSON.parse(data.toString()));
        } catch {
          // handled below
        }
        if (!msg?.success || msg.data.t !== 'welcome') {
          ws.close(TunnelClose.BAD_HELLO, 'expected welcome');
          return;
        }
        deps.clock.clearTimeout(welcomeTimer);
        const sender = messageSender(ws, socket!);
        peer = new TunnelPeer({
          transport: { send: (d) => sender.send(d), close: (code, reason) => ws.close(code, reason) },
          clock: deps.clock,
          logger: deps.logger,
          handlers: deps.handlers,
          onStreamOpen: deps.onStreamOpen,
          heartbeatMs: deps.heartbeatMs,
        });
        this.peer = peer;
        onEstablished();
        deps.logger.info('tunnel connected', { url: deps.url });
        deps.onConnected(peer);
      });
      ws.on('close', (code, reason) => {
        deps.clock.clearTimeout(welcomeTimer);
        if (peer) {
          peer.handleTransportClosed('AGENT_DISCONNECTED', `tunnel closed (${code} ${reason.toString()})`);
          deps.logger.warn('tunnel dropped', { code, reason: reason.toString() });
        }
        resolve();
      });
      ws.on('error', (err) => {
        if (!peer) reject(err);
      });
    });
  }
}
