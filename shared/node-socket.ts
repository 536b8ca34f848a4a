import type { Socket } from 'node:net';
import type WebSocket from 'ws';

/**
 * Masking exists so script-controlled bytes from browsers cannot poison intermediary caches; our
 * agent is no browser, and an all-zero mask lets `ws` skip the per-byte XOR on every frame it sends.
 */
export const zeroMask = (mask: Uint8Array): void => {
  mask.fill(0);
};

/**
 * Runs `fn` with `socket` corked until the end of the tick, so everything written within one tick
 * leaves as one write. Proxied CDP traffic arrives in bursts (many messages per read), and one syscall
 * per message was the proxy's main cost. Flushing on nextTick adds no latency: it runs before the
 * event loop polls for I/O again.
 */
function batchedTick(socket: Socket): (fn: () => void) => void {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return (fn) => {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    fn();
  };
}

export type MessageSender = {
  /** Sends one message; messages sent within a tick leave as one write. */
  send(data: string | Uint8Array, binary?: boolean): void;
  /** Sends and reports the message consumed once the socket has room (at once below `highWater`,
   * else on the socket's 'drain'): credit for a tunnel stream without a callback per message. */
  sendCredited(payload: Uint8Array, binary: boolean, consumed: () => void): void;
};

/** Message sending for a `ws` WebSocket over `socket`, the socket the caller handed to (or got from) `ws`. */
export function messageSender(ws: WebSocket, socket: Socket, highWater = 1024 * 1024): MessageSender {
  const tick = batchedTick(socket);
  const waiting: Array<() => void> = [];
  socket.on('drain', () => {
    for (const f of waiting.splice(0)) f();
  });
  const send = (data: string | Uint8Array, binary = typeof data !== 'string') => tick(() => ws.send(data, { binary }));
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
  const tick = batchedTick(socket);
  const write = (chunk: Uint8Array) => tick(() => socket.write(chunk));
  let owed = 0;
  let consume: ((n: number) => void) | null = null;
  socket.on('drain', () => {
    if (owed > 0 && consume) consume(owed);
    owed = 0;
  });
  return (payload: Uint8Array, consumed: (n: number) => void): void => {
    consume = consumed;
    write(payload);
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
