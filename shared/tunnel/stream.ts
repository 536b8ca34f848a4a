import type { FrameKind } from './frames.js';
import { AppError, fromWire, toWire, type ErrorCode, type WireError } from '../errors.js';

/** Byte streams are cut into frames of at most this size so one big body cannot hog the tunnel. */
export const MAX_DATA_FRAME = 64 * 1024;

export type StreamHead = { status: number; headers: [string, string][]; protocol?: string };

/** What a stream needs from its tunnel; keeps the stream testable and free of wire details. */
export interface StreamWire {
  sendFrame(kind: FrameKind, sid: number, payload: Uint8Array): void;
  sendControl(msg: Record<string, unknown> & { t: string }): void;
  forget(sid: number): void;
}

/**
 * One multiplexed byte stream. Each direction has a credit window: a frame is sent only while the
 * window is open, the rest waits here, and `write` returns false until the reader has reported enough
 * consumed, so one slow client stalls only its own stream. A WebSocket message is never split, so it
 * may overshoot the window by itself; byte streams are cut to MAX_DATA_FRAME.
 */
export class TunnelStream {
  onData?: (kind: FrameKind, payload: Uint8Array) => void;
  onEnd?: () => void;
  /** `byPeer`: the other side closed (with its code and reason) rather than this side or the tunnel. */
  onClose?: (code: number | undefined, reason: string | undefined, byPeer: boolean) => void;
  onDrain?: () => void;

  readonly head: Promise<StreamHead>;
  private resolveHead!: (h: StreamHead) => void;
  private rejectHead!: (e: Error) => void;
  private sendWindow: number;
  private unacked = 0;
  private outstanding = 0;
  private localEnded = false;
  private remoteEnded = false;
  private closed = false;
  private buffered: Array<[FrameKind, Uint8Array]> | null = [];
  private queue: Array<[FrameKind, Uint8Array]> = [];
  private blocked = false;
  private endQueued = false;

  constructor(
    readonly sid: number,
    private readonly wire: StreamWire,
    private readonly window: number,
  ) {
    this.sendWindow = window;
    this.head = new Promise<StreamHead>((resolve, reject) => {
      this.resolveHead = resolve;
      this.rejectHead = reject;
    });
    // Rejections of `head` are observed by openers; acceptors never await it.
    this.head.catch(() => {});
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Acceptor side: the target answered. */
  accept(head: StreamHead): void {
    if (this.closed) return;
    this.wire.sendControl({ t: 'opened', sid: this.sid, ...head });
  }

  /** Acceptor side: the target could not be reached; the stream ends here. */
  reject(error: AppError): void {
    if (this.closed) return;
    this.wire.sendControl({ t: 'open_failed', sid: this.sid, error: toWire(error) });
    this.finish(undefined, undefined, false);
  }

  write(kind: FrameKind, payload: Uint8Array): boolean {
    if (this.closed || this.localEnded) return false;
    if (kind === 'data' && payload.byteLength > MAX_DATA_FRAME) {
      for (let at = 0; at < payload.byteLength; at += MAX_DATA_FRAME) this.sendOrQueue(kind, payload.subarray(at, at + MAX_DATA_FRAME));
    } else this.sendOrQueue(kind, payload);
    const open = this.queue.length === 0 && this.sendWindow > 0;
    if (!open) this.blocked = true;
    return open;
  }

  private sendOrQueue(kind: FrameKind, payload: Uint8Array): void {
    if (this.queue.length === 0 && this.sendWindow > 0) this.sendNow(kind, payload);
    else this.queue.push([kind, payload]);
  }

  private sendNow(kind: FrameKind, payload: Uint8Array): void {
    this.sendWindow -= payload.byteLength;
    this.wire.sendFrame(kind, this.sid, payload);
  }

  /** @internal the open message already said this side sends nothing. */
  markEnded(): void {
    this.localEnded = true;
  }

  /** Half-close: no more bytes from this side (after what is still queued). */
  end(): void {
    if (this.closed || this.localEnded) return;
    this.localEnded = true;
    if (this.queue.length > 0) this.endQueued = true;
    else this.sendEnd();
  }

  private sendEnd(): void {
    this.wire.sendControl({ t: 'end', sid: this.sid });
    if (this.remoteEnded) this.finish(undefined, undefined, false);
  }

  /** Abort or WebSocket close: both directions end, the peer is told why. */
  close(code?: number, reason?: string): void {
    if (this.closed) return;
    this.wire.sendControl({ t: 'close', sid: this.sid, code, reason: reason?.slice(0, 123) });
    this.finish(code, reason, false);
  }

  /** The reader has delivered `bytes` downstream; hand the writer more credit in batches. */
  consumed(bytes: number): void {
    if (this.closed || bytes <= 0) return;
    this.outstanding -= bytes;
    this.unacked += bytes;
    if (this.unacked >= this.window / 4) {
      this.wire.sendControl({ t: 'credit', sid: this.sid, bytes: this.unacked });
      this.unacked = 0;
    }
  }

  // ---- driven by the tunnel on arrival ----

  /** @internal */ receiveHead(head: StreamHead): void {
    this.resolveHead(head);
  }

  /** @internal */ receiveOpenFailed(err: WireError): void {
    this.rejectHead(fromWire(err));
    this.finish(undefined, undefined, true);
  }

  /** @internal */ receiveFrame(kind: FrameKind, payload: Uint8Array): boolean {
    if (this.closed) return true;
    // A frame may only start while the window is open; a peer that ignores it is broken or hostile.
    if (this.outstanding >= this.window) return false;
    this.outstanding += payload.byteLength;
    if (this.onData) this.onData(kind, payload);
    else this.buffered?.push([kind, payload]);
    return true;
  }

  /** Call once handlers are attached: replays bytes that arrived before. */
  start(): void {
    const pending = this.buffered;
    this.buffered = null;
    if (!pending) return;
    for (const [kind, payload] of pending) this.onData?.(kind, payload);
    if (this.remoteEnded) this.onEnd?.();
  }

  /** @internal */ receiveEnd(): void {
    if (this.remoteEnded || this.closed) return;
    this.remoteEnded = true;
    if (this.buffered === null) this.onEnd?.();
    if (this.localEnded) this.finish(undefined, undefined, true);
  }

  /** @internal */ receiveCredit(bytes: number): void {
    if (this.closed) return;
    this.sendWindow += bytes;
    while (this.queue.length > 0 && this.sendWindow > 0) {
      const [kind, payload] = this.queue.shift()!;
      this.sendNow(kind, payload);
    }
    if (this.queue.length > 0) return;
    if (this.endQueued) {
      this.endQueued = false;
      this.sendEnd();
    }
    if (this.blocked && this.sendWindow > 0) {
      this.blocked = false;
      this.onDrain?.();
    }
  }

  /** @internal */ receiveClose(code?: number, reason?: string): void {
    this.rejectHead(new AppError('BROWSER_UNREACHABLE', reason ?? 'stream closed by peer'));
    this.finish(code, reason, true);
  }

  /** @internal the tunnel itself went away. */
  abort(code: ErrorCode, message: string): void {
    if (this.closed) return;
    this.rejectHead(new AppError(code, message));
    this.finish(1011, message, false);
  }

  private finish(code: number | undefined, reason: string | undefined, byPeer: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.wire.forget(this.sid);
    this.onClose?.(code, reason, byPeer);
  }
}
