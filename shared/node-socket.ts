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
 * Coalesces every message a WebSocket sends within one tick into a single write. Proxied CDP traffic
 * arrives in bursts (many messages per read), and one syscall per message was the proxy's main cost.
 * Flushing on nextTick adds no latency: it runs before the event loop polls for I/O again.
 */
export function corkPerTick(ws: WebSocket): void {
  const socket = (ws as unknown as { _socket?: Socket })._socket;
  if (!socket) return;
  const send = ws.send.bind(ws) as (...args: unknown[]) => void;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  ws.send = ((...args: unknown[]) => {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    send(...args);
  }) as typeof ws.send;
}

/**
 * Sends a message and reports it consumed as soon as the socket has room, instead of one write
 * callback per message; past `highWater` buffered bytes, credit waits for the socket's 'drain'.
 */
export function creditingSender(ws: WebSocket, highWater = 1024 * 1024) {
  const socket = (ws as unknown as { _socket?: Socket })._socket;
  const waiting: Array<() => void> = [];
  socket?.on('drain', () => {
    for (const f of waiting.splice(0)) f();
  });
  return (payload: Uint8Array, binary: boolean, consumed: () => void): void => {
    ws.send(payload, { binary });
    if (!socket || socket.writableLength < highWater) consumed();
    else waiting.push(consumed);
  };
}

/** Raw-socket counterpart of corkPerTick: a write function whose writes within a tick leave as one. */
export function tickBatchedWriter(socket: Socket): (chunk: Uint8Array) => boolean {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return (chunk) => {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return socket.write(chunk);
  };
}

/**
 * Pipes tunnel-stream bytes into a socket with credit: consumed at once while the socket has room,
 * after its 'drain' otherwise.
 */
export function creditingWriter(socket: Socket, highWater = 1024 * 1024) {
  const write = tickBatchedWriter(socket);
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
