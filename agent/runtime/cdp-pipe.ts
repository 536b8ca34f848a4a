import type { Readable, Writable } from 'node:stream';
import { withDeadline, type Clock } from '../../shared/clock.js';
import { corkUntilCheckPhase } from '../../shared/node-socket.js';

/**
 * Chromium's `--remote-debugging-pipe`: CDP as NUL-terminated JSON messages, read by the browser on
 * fd 3 and written by it on fd 4. No port, so nothing but the process holding the pipe can drive the
 * browser. Every message of a flattened session ends with `,"sessionId":"<id>"}` (Chromium appends it
 * last), so routing reads only the tail of a message and never parses a screenshot to find its owner.
 */
const SESSION_SUFFIX = /,"sessionId":"([0-9A-Za-z]{1,64})"\}$/;
const TAIL_BYTES = 96;

export type PipeListener = (message: Buffer, suffixStart: number) => void;

type PendingCall = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class CdpCallError extends Error {}

/**
 * A CDP connection to a browser as the agent's own sessions need it, whatever carries it (the
 * browser's pipe, or a pod's WebSocket): calls on the root session, and each flattened session's
 * messages routed by the suffix Chromium appends to them.
 */
export abstract class CdpConnection {
  private readonly listeners = new Map<string, PipeListener>();
  private readonly pending = new Map<number, PendingCall>();
  private nextId = 1;
  private closedError: Error | null = null;
  private readonly closedListeners = new Set<() => void>();

  constructor(protected readonly clock: Clock) {}

  get isClosed(): boolean {
    return this.closedError !== null;
  }

  /** One message to the browser; false when the transport wants the sender to wait before the next. */
  abstract send(message: string): boolean;

  /** A command on the connection's own (root) session, answered within `timeoutMs`. */
  call<T = Record<string, unknown>>(method: string, params: Record<string, unknown>, timeoutMs: number): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    const answer = new Promise<T>((resolve, reject) => this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject }));
    this.send(JSON.stringify({ id, method, params }));
    return withDeadline(this.clock, answer, timeoutMs, {
      error: () => new Error(`${method} got no answer within ${timeoutMs} ms`),
      onTimeout: () => this.pending.delete(id),
    });
  }

  /** Messages of session `sessionId` go to `listener` (with where their session suffix starts). */
  route(sessionId: string, listener: PipeListener): void {
    this.listeners.set(sessionId, listener);
  }

  unroute(sessionId: string): void {
    this.listeners.delete(sessionId);
  }

  /** Runs once the connection is gone (the browser exited or closed it). */
  onClose(fn: () => void): () => void {
    if (this.closedError) {
      fn();
      return () => {};
    }
    this.closedListeners.add(fn);
    return () => this.closedListeners.delete(fn);
  }

  /** One whole message from the browser. */
  protected dispatch(message: Buffer): void {
    const tail = message.toString('latin1', Math.max(0, message.length - TAIL_BYTES));
    const m = SESSION_SUFFIX.exec(tail);
    if (m) {
      const listener = this.listeners.get(m[1]!);
      // A session whose client is gone: its last messages have nobody to go to.
      listener?.(message, message.length - m[0].length);
      return;
    }
    this.rootMessage(message);
  }

  /** The root session carries only this connection's own calls (and events nobody subscribed to). */
  private rootMessage(message: Buffer): void {
    let parsed: { id?: number; result?: unknown; error?: { message?: string } };
    try {
      parsed = JSON.parse(message.toString('utf8')) as typeof parsed;
    } catch {
      return;
    }
    if (typeof parsed.id !== 'number') return;
    const call = this.pending.get(parsed.id);
    if (!call) return;
    this.pending.delete(parsed.id);
    if (parsed.error) call.reject(new CdpCallError(parsed.error.message ?? 'CDP error'));
    else call.resolve(parsed.result ?? {});
  }

  protected closed(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const call of this.pending.values()) call.reject(err);
    this.pending.clear();
    for (const fn of this.closedListeners) fn();
    this.closedListeners.clear();
    this.listeners.clear();
  }
}

export class CdpPipe extends CdpConnection {
  private chunks: Buffer[] = [];
  private readonly cork: () => void;

  constructor(
    private readonly input: Writable,
    private readonly output: Readable,
    clock: Clock,
  ) {
    super(clock);
    this.cork = corkUntilCheckPhase(input);
    output.on('data', (chunk: Buffer) => this.receive(chunk));
    output.on('close', () => this.closed(new Error('the browser closed its DevTools pipe')));
    output.on('error', (err) => this.closed(err));
    input.on('error', (err) => this.closed(err));
  }

  /** One message to the browser; false when the pipe is full (see `onceWritable`). Messages sent in
   * one loop iteration leave in one write. */
  send(message: string): boolean {
    if (this.isClosed) return true;
    this.cork();
    return this.input.write(`${message}\0`);
  }

  onceWritable(fn: () => void): void {
    if (this.input.writableNeedDrain) this.input.once('drain', fn);
    else fn();
  }

  /** Stops reading until `resume`: a client that cannot keep up holds back the browser, not the agent's memory. */
  pause(): void {
    this.output.pause();
  }

  resume(): void {
    this.output.resume();
  }

  private receive(chunk: Buffer): void {
    let start = 0;
    for (let end = chunk.indexOf(0); end !== -1; end = chunk.indexOf(0, start)) {
      const piece = chunk.subarray(start, end);
      const message = this.chunks.length ? Buffer.concat([...this.chunks, piece]) : piece;
      this.chunks = [];
      this.dispatch(message);
      start = end + 1;
    }
    if (start < chunk.length) this.chunks.push(chunk.subarray(start));
  }
}

type CdpMessage = { id?: number; method?: string; params?: Record<string, unknown>; result?: unknown; error?: { message?: string } };

/**
 * A session of the agent's own on a connection (not a client's): its commands answered, its events parsed
 * and handed to `onEvent`. For the few small messages the agent itself exchanges with a browser.
 */
export class AgentCdpSession {
  private readonly pending = new Map<number, PendingCall>();
  private nextId = 1;
  private readonly unwatchClose: () => void;

  constructor(
    private readonly pipe: CdpConnection,
    readonly sessionId: string,
    private readonly clock: Clock,
    private readonly onEvent: (method: string, params: Record<string, unknown>) => void = () => {},
  ) {
    pipe.route(sessionId, (message, suffixStart) => this.receive(message, suffixStart));
    this.unwatchClose = pipe.onClose(() => this.detached(new Error('the browser closed its DevTools connection')));
  }

  call<T = Record<string, unknown>>(method: string, params: Record<string, unknown>, timeoutMs: number): Promise<T> {
    const id = this.nextId++;
    const answer = new Promise<T>((resolve, reject) => this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject }));
    this.pipe.send(JSON.stringify({ id, method, params, sessionId: this.sessionId }));
    return withDeadline(this.clock, answer, timeoutMs, {
      error: () => new Error(`${method} got no answer within ${timeoutMs} ms`),
      onTimeout: () => this.pending.delete(id),
    });
  }

  /** The target went away (or the session was detached): calls in flight fail, nothing more arrives. */
  detached(err = new Error('the session was detached')): void {
    this.unwatchClose();
    this.pipe.unroute(this.sessionId);
    for (const call of this.pending.values()) call.reject(err);
    this.pending.clear();
  }

  private receive(message: Buffer, suffixStart: number): void {
    let parsed: CdpMessage;
    try {
      parsed = JSON.parse(`${message.toString('utf8', 0, suffixStart)}}`) as CdpMessage;
    } catch {
      return;
    }
    if (typeof parsed.id === 'number') {
      const call = this.pending.get(parsed.id);
      if (!call) return;
      this.pending.delete(parsed.id);
      if (parsed.error) call.reject(new CdpCallError(parsed.error.message ?? 'CDP error'));
      else call.resolve(parsed.result ?? {});
    } else if (typeof parsed.method === 'string') this.onEvent(parsed.method, parsed.params ?? {});
  }
}
