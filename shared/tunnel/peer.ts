import type { Clock, TimerHandle } from '../clock.js';
import { rateLimitedWarn, type Logger } from '../logger.js';
import { MAX_TUNNEL_STREAMS } from './handshake.js';
import { decodeFrame, encodeFrame, type FrameKind } from './frames.js';
import { AppError, fromWire, toWire, type ErrorCode, type WireError } from '../errors.js';
import { ControlMessage, Rpc, type RpcMethod, type RpcParams, type RpcResult, type StreamSpec } from './protocol.js';
import { TunnelStream, type StreamWire } from './stream.js';

/** The socket under a tunnel: a `ws` WebSocket on Node, a WebSocket in a Durable Object on Workers. */
export interface TunnelTransport {
  send(data: string | Uint8Array): void;
  close(code: number, reason: string): void;
}

export type RpcHandlers = { [M in RpcMethod]?: (params: RpcParams<M>) => Promise<RpcResult<M>> };

export type TunnelPeerOptions = {
  transport: TunnelTransport;
  clock: Clock;
  logger: Logger;
  handlers?: RpcHandlers;
  /** Called on the accepting side for each stream the other side opens. */
  onStreamOpen?: (stream: TunnelStream, spec: StreamSpec) => void;
  /** Per-stream credit window in bytes. */
  windowBytes?: number;
  heartbeatMs?: number;
  /** 0 turns the timer off. */
  /** Declare the link dead when nothing arrived for this long. */
  deadAfterMs?: number;
  /** Open streams at once, either way (default MAX_TUNNEL_STREAMS). */
  maxStreams?: number;
  /** Each RPC this side called, once it settled (for metrics). */
  onRpc?: (method: RpcMethod, seconds: number, ok: boolean) => void;
  /** Each proxy stream, once it closed (for metrics). */
  onStreamClosed?: (seconds: number) => void;
};

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: TimerHandle; method: RpcMethod };

/** Heartbeats are constant strings, so a Durable Object can answer them without waking up. */
export const PING = '{"t":"ping","ts":0}';
export const PONG = '{"t":"pong","ts":0}';

/**
 * One end of the multiplexed tunnel: RPC calls with ids and deadlines, many flow-controlled byte
 * streams, and heartbeats, over one message-oriented socket. Runtime-neutral (no Node APIs).
 */
export class TunnelPeer {
  private readonly streams = new Map<number, TunnelStream>();
  private readonly pending = new Map<number, Pending>();
  private nextCallId = 1;
  private nextStreamId = 1;
  private lastSeen: number;
  private heartbeatTimer: TimerHandle | undefined;
  private closedWith: { code: ErrorCode; message: string } | null = null;
  private readonly window: number;
  private readonly wire: StreamWire;
  private closeListeners: Array<(reason: string) => void> = [];
  private readonly maxStreams: number;
  /** What the other side can provoke is logged at a bounded rate. */
  private readonly warnPeer: (msg: string, fields?: Record<string, unknown>) => void;

  constructor(private readonly opts: TunnelPeerOptions) {
    this.window = opts.windowBytes ?? 1024 * 1024;
    this.maxStreams = opts.maxStreams ?? MAX_TUNNEL_STREAMS;
    this.warnPeer = rateLimitedWarn(opts.logger, () => opts.clock.now());
    this.lastSeen = opts.clock.now();
    this.wire = {
      sendFrame: (kind: FrameKind, sid: number, payload: Uint8Array) => this.sendRaw(encodeFrame(kind, sid, payload)),
      sendControl: (msg) => this.sendRaw(JSON.stringify(msg)),
      forget: (sid: number) => {
        if (this.streams.delete(sid)) this.logStreamClosed(sid);
      },
    };
    this.scheduleHeartbeat();
  }

  /** Proxy streams' open times, for their close's debug line. */
  private readonly streamOpenedAt = new Map<number, number>();

  private logStreamOpened(sid: number, spec: StreamSpec, side: 'opened' | 'accepted'): void {
    this.streamOpenedAt.set(sid, this.opts.clock.now());
    // The path without its query: a query may carry a token.
    this.opts.logger.debug(`proxy stream ${side}`, { sid, session: spec.sessionId, kind: spec.kind, method: spec.method, path: spec.path.split('?')[0], target: spec.target });
  }

  private logStreamClosed(sid: number): void {
    const opened = this.streamOpenedAt.get(sid);
    this.streamOpenedAt.delete(sid);
    const ms = opened === undefined ? undefined : this.opts.clock.now() - opened;
    if (ms !== undefined) this.opts.onStreamClosed?.(ms / 1000);
    this.opts.logger.debug('proxy stream closed', { sid, ms });
  }

  get isClosed(): boolean {
    return this.closedWith !== null;
  }

  get openStreams(): number {
    return this.streams.size;
  }

  onClose(listener: (reason: string) => void): void {
    if (this.closedWith) listener(this.closedWith.message);
    else this.closeListeners.push(listener);
  }

  call<M extends RpcMethod>(method: M, params: RpcParams<M>, timeoutMs: number): Promise<RpcResult<M>> {
    if (this.closedWith) return Promise.reject(new AppError(this.closedWith.code, this.closedWith.message));
    const id = this.nextCallId++;
    const { clock, logger } = this.opts;
    const started = clock.now();
    const logged = (ok: boolean, err?: unknown) => {
      const ms = clock.now() - started;
      this.opts.onRpc?.(method, ms / 1000, ok);
      logger.debug('tunnel rpc', { method, id, ms, ok, ...(err instanceof AppError ? { code: err.code } : err ? { err } : {}) });
    };
    return new Promise<RpcResult<M>>((resolve, reject) => {
      const timer = clock.setTimeout(() => {
        this.pending.delete(id);
        const err = new AppError('TIMEOUT', `${method} got no answer within ${timeoutMs} ms`);
        logged(false, err);
        reject(err);
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          logged(true);
          resolve(v as RpcResult<M>);
        },
        reject: (err) => {
          logged(false, err);
          reject(err);
        },
        timer,
        method,
      });
      this.sendRaw(JSON.stringify({ t: 'call', id, method, params, timeoutMs }));
    });
  }

  /** `bodyless` ends our direction in the same message (a GET saves one message per request). */
  openStream(spec: StreamSpec, opts: { bodyless?: boolean } = {}): TunnelStream {
    if (this.closedWith) throw new AppError(this.closedWith.code, this.closedWith.message);
    if (this.streams.size >= this.maxStreams) throw new AppError('TOO_MANY_CONNECTIONS', `the agent's tunnel already carries ${this.maxStreams} streams`);
    const sid = this.nextStreamId++;
    const stream = new TunnelStream(sid, this.wire, this.window);
    this.streams.set(sid, stream);
    this.logStreamOpened(sid, spec, 'opened');
    if (opts.bodyless) stream.markEnded();
    this.sendRaw(JSON.stringify(opts.bodyless ? { t: 'open', sid, spec, end: true } : { t: 'open', sid, spec }));
    return stream;
  }

  /** Feed every message the transport receives through here. */
  receive(data: string | Uint8Array): void {
    if (this.closedWith) return;
    this.lastSeen = this.opts.clock.now();
    if (typeof data !== 'string') return this.receiveFrame(data);
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      this.warnPeer('tunnel: dropped a control message that is not JSON', { bytes: data.length });
      return;
    }
    const msg = ControlMessage.safeParse(parsed);
    if (!msg.success) {
      this.warnPeer('tunnel: dropped an invalid control message', { issues: msg.error.issues.slice(0, 3) });
      return;
    }
    this.dispatch(msg.data);
  }

  /** The transport is gone (closed by either side or errored): fail everything in flight. */
  handleTransportClosed(code: ErrorCode, message: string): void {
    if (this.closedWith) return;
    this.closedWith = { code, message };
    if (this.heartbeatTimer !== undefined) this.opts.clock.clearTimeout(this.heartbeatTimer);
    for (const [id, p] of this.pending) {
      this.opts.clock.clearTimeout(p.timer);
      p.reject(new AppError(code, `${p.method} failed: ${message}`));
      this.pending.delete(id);
    }
    for (const stream of [...this.streams.values()]) stream.abort(code, message);
    this.streams.clear();
    this.streamOpenedAt.clear();
    for (const l of this.closeListeners) l(message);
    this.closeListeners = [];
  }

  close(code: number, reason: string): void {
    try {
      this.opts.transport.close(code, reason);
    } catch {
      // already closed
    }
    this.handleTransportClosed('AGENT_DISCONNECTED', reason);
  }

  private sendRaw(data: string | Uint8Array): void {
    if (this.closedWith) return;
    try {
      this.opts.transport.send(data);
    } catch (err) {
      this.opts.logger.warn('tunnel: send failed', { err });
      this.handleTransportClosed('AGENT_DISCONNECTED', 'tunnel send failed');
    }
  }

  private receiveFrame(data: Uint8Array): void {
    const frame = decodeFrame(data);
    if (!frame) {
      this.warnPeer('tunnel: dropped a malformed binary frame', { bytes: data.byteLength });
      return;
    }
    const stream = this.streams.get(frame.sid);
    if (!stream) return; // raced with a close; the peer learns from our close message
    if (!stream.receiveFrame(frame.kind, frame.payload)) {
      this.warnPeer('tunnel: peer overran its stream window', { sid: frame.sid });
      stream.close(1008, 'flow control violated');
    }
  }

  private dispatch(msg: ControlMessage): void {
    switch (msg.t) {
      case 'ping':
        this.sendRaw(PONG);
        return;
      case 'pong':
      case 'hello':
      case 'welcome':
        return;
      case 'call':
        void this.answer(msg.id, msg.method, msg.params);
        return;
      case 'result': {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        this.opts.clock.clearTimeout(p.timer);
        if (!msg.ok) {
          return p.reject(fromWire(msg.error ?? { code: 'AGENT_ERROR', message: `${p.method} failed without detail` }));
        }
        const parsed = Rpc[p.method].result.safeParse(msg.value);
        if (parsed.success) p.resolve(parsed.data);
        else p.reject(new AppError('AGENT_ERROR', `${p.method} returned an invalid result`));
        return;
      }
      case 'open': {
        if (!this.opts.onStreamOpen || this.streams.has(msg.sid)) {
          this.sendRaw(JSON.stringify({ t: 'open_failed', sid: msg.sid, error: { code: 'BAD_REQUEST', message: 'streams are not accepted here' } }));
          return;
        }
        if (this.streams.size >= this.maxStreams) {
          this.warnPeer('tunnel: refused a stream over the cap', { sid: msg.sid, open: this.streams.size });
          this.sendRaw(
            JSON.stringify({ t: 'open_failed', sid: msg.sid, error: { code: 'TOO_MANY_CONNECTIONS', message: `this tunnel already carries ${this.maxStreams} streams` } }),
          );
          return;
        }
        const stream = new TunnelStream(msg.sid, this.wire, this.window);
        this.streams.set(msg.sid, stream);
        this.logStreamOpened(msg.sid, msg.spec, 'accepted');
        this.opts.onStreamOpen(stream, msg.spec);
        if (msg.end) stream.receiveEnd();
        return;
      }
      case 'opened':
        this.streams.get(msg.sid)?.receiveHead({ status: msg.status, headers: msg.headers, protocol: msg.protocol });
        return;
      case 'open_failed':
        this.streams.get(msg.sid)?.receiveOpenFailed(msg.error);
        return;
      case 'end':
        this.streams.get(msg.sid)?.receiveEnd();
        return;
      case 'close':
        this.streams.get(msg.sid)?.receiveClose(msg.code, msg.reason);
        return;
      case 'credit':
        this.streams.get(msg.sid)?.receiveCredit(msg.bytes);
        return;
    }
  }

  private async answer(id: number, method: string, params: unknown): Promise<void> {
    const reply = (body: { ok: true; value: unknown } | { ok: false; error: WireError }) => this.sendRaw(JSON.stringify({ t: 'result', id, ...body }));
    if (!(method in Rpc)) return reply({ ok: false, error: { code: 'BAD_REQUEST', message: `unknown method ${method}` } });
    const m = method as RpcMethod;
    const handler = this.opts.handlers?.[m] as ((p: unknown) => Promise<unknown>) | undefined;
    if (!handler) return reply({ ok: false, error: { code: 'BAD_REQUEST', message: `${method} is not served here` } });
    const parsed = Rpc[m].params.safeParse(params);
    if (!parsed.success) {
      return reply({ ok: false, error: { code: 'VALIDATION_FAILED', message: `invalid params for ${method}: ${parsed.error.issues[0]?.message ?? ''}` } });
    }
    try {
      reply({ ok: true, value: await handler(parsed.data) });
    } catch (err) {
      // Only AppErrors carry a message meant for the other side; anything else stays in our log.
      if (!(err instanceof AppError)) this.opts.logger.error('tunnel: handler failed', { method, err });
      reply({ ok: false, error: toWire(err) });
    }
  }

  private scheduleHeartbeat(): void {
    const every = this.opts.heartbeatMs ?? 10_000;
    // 0: the owner watches the link itself (a Durable Object uses auto-response and alarms).
    if (every === 0) return;
    const deadAfter = this.opts.deadAfterMs ?? every * 3;
    this.heartbeatTimer = this.opts.clock.setTimeout(() => {
      if (this.closedWith) return;
      if (this.opts.clock.now() - this.lastSeen > deadAfter) {
        this.opts.logger.warn('tunnel: peer silent, closing', { silentMs: this.opts.clock.now() - this.lastSeen });
        this.close(4000, 'heartbeat timeout');
        return;
      }
      this.sendRaw(PING);
      this.scheduleHeartbeat();
    }, every);
  }
}
