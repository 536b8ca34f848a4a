import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import type WebSocket from 'ws';

/**
 * Masking exists so script-controlled bytes from browsers cannot poison intermediary caches; our
 * agent is no browser, and an all-zero mask lets `ws` skip the per-byte XOR on every frame it sends.
 */
export const zeroMask = (mask: Uint8Array): void => {
  mask.fill(0);
};

/**
 * Corks `socket` until the event loop's check phase, so everything written to it while this loop
 * iteration handles its I/O leaves as one write. Proxied CDP traffic arrives in bursts from several
 * sockets at once, and the write syscalls were the proxy's main cost; flushing in the check phase
 * (setImmediate) coalesces the writes of every read handled in the same poll phase, and adds no
 * timer: it runs as soon as that phase is done. Call it before each write.
 */
export function corkUntilCheckPhase(socket: Pick<Writable, 'cork' | 'uncork' | 'destroyed'>): () => void {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return () => {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      setImmediate(uncork);
    }
  };
}

const BINARY = { binary: true } as const;
const TEXT = { binary: false } as const;

export type MessageSender = {
  /** Sends one message; messages sent within one loop iteration leave as one write. */
  send(data: string | Uint8Array, binary?: boolean): void;
  /** Sends and reports the message consumed once the socket has room (at once below `highWater`,
   * else on the socket's 'drain'): credit for a tunnel stream without a callback per message. */
  sendCredited(payload: Uint8Array, binary: boolean, consumed: () => void): void;
};

/** Message sending for a `ws` WebSocket over `socket`, the socket the caller handed to (or got from) `ws`. */
export function messageSender(ws: WebSocket, socket: Socket, highWater = 1024 * 1024): MessageSender {
  const cork = corkUntilCheckPhase(socket);
  const waiting: Array<() => void> = [];
  socket.on('drain', () => {
    for (const f of waiting.splice(0)) f();
  });
  const send = (data: string | Uint8Array, binary = typeof data !== 'string') => {
    cork();
    ws.send(data, binary ? BINARY : TEXT);
  };
  return {
    send,
    sendCredited(payload, binary, consumed) {
      send(payload, binary);
      if (socket.writableLength < highWater) consumed();
      else waiting.push(consumed);
    },
  };
}

/**
 * Pipes tunnel-stream bytes into a socket with credit: consumed at once while the socket has room,
 * after its 'drain' otherwise.
 */
export function creditingWriter(socket: Socket, highWater = 1024 * 1024) {
  const cork = corkUntilCheckPhase(socket);
  let owed = 0;
  let consume: ((n: number) => void) | null = null;
  socket.on('drain', () => {
    if (owed > 0 && consume) consume(owed);
    owed = 0;
  });
  return (payload: Uint8Array, consumed: (n: number) => void): void => {
    consume = consumed;
    cork();
    socket.write(payload);
    if (socket.writableLength < highWater) consumed(payload.byteLength);
    else owed += payload.byteLength;
  };
}

/** `ws` hands over message payloads as Buffer, ArrayBuffer or fragments. */
export function asBytes(d: Buffer | ArrayBuffer | Buffer[]): Uint8Array {
  if (Array.isArray(d)) return Buffer.concat(d);
  if (d instanceof ArrayBuffer) return new Uint8Array(d);
  return d;
}

/** Node's IncomingHttpHeaders as pairs (arrays become repeated pairs). */
export function nodeHeaderPairs(h: Record<string, string | string[] | undefined>): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) out.push([k, one]);
  }
  return out;
}
