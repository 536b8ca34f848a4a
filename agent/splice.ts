import { connect, type Socket } from 'node:net';
import { creditingWriter } from '../shared/node-socket.js';
import type { StreamSpec } from '../shared/tunnel/protocol.js';
import type { TunnelStream } from '../shared/tunnel/stream.js';
import { closeFrame, FrameBoundaryTracker } from '../shared/ws-frames.js';

const CONNECT_TIMEOUT_MS = 10_000;
const MAX_HEAD_BYTES = 16 * 1024;
const DROP_REQUEST_HEADERS = new Set(['host', 'origin', 'connection', 'upgrade']);

/**
 * A WebSocket carried as raw bytes: the agent sends the client's upgrade request to the browser and
 * then moves bytes both ways untouched (no message parsing, like a single-hop proxy). Only frame
 * boundaries of the browser's direction are tracked, so the agent can end the connection with a
 * proper close frame and reason when the session ends. Returns the session-end closer.
 */
export function spliceUpgrade(stream: TunnelStream, spec: StreamSpec, host: string, port: number, touch: () => void): (code: number, reason: string) => void {
  const socket: Socket = connect({ host, port, noDelay: true });
  const tracker = new FrameBoundaryTracker();
  const write = creditingWriter(socket);
  let upgraded = false;
  let head = Buffer.alloc(0);
  let pendingClose: { code: number; reason: string } | null = null;
  const timer = setTimeout(() => socket.destroy(new Error('browser did not answer the upgrade in time')), CONNECT_TIMEOUT_MS);

  const finishWithClose = (code: number, reason: string) => {
    stream.write('data', closeFrame(code, reason));
    stream.close(code, reason);
    socket.destroy();
  };

  socket.on('connect', () => {
    const lines = [`GET ${spec.path} HTTP/1.1`, `host: ${host}:${port}`, 'connection: Upgrade', 'upgrade: websocket'];
    for (const [k, v] of Object.entries(spec.headers)) if (!DROP_REQUEST_HEADERS.has(k)) lines.push(`${k}: ${v}`);
    socket.write(lines.join('\r\n') + '\r\n\r\n');
  });

  socket.on('data', (chunk: Buffer) => {
    touch();
    if (!upgraded) {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) socket.destroy(new Error('upgrade response head too large'));
        return;
      }
      clearTimeout(timer);
      const [statusLine, ...headerLines] = head.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.\d (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0);
      if (status !== 101) {
        stream.reject({ code: 'BROWSER_UNREACHABLE', message: `browser answered ${status || 'garbage'} instead of upgrading`, status: 502 });
        socket.destroy();
        return;
      }
      upgraded = true;
      const headers = headerLines.map((l): [string, string] => {
        const i = l.indexOf(':');
        return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()];
      });
      stream.accept({ status: 101, headers });
      chunk = head.subarray(end + 4);
      head = Buffer.alloc(0);
      if (chunk.length === 0) return;
    }
    forward(chunk);
  });

  function forward(chunk: Buffer): void {
    if (pendingClose) {
      const cut = tracker.advance(chunk, 0, true);
      if (cut > 0 && !stream.write('data', chunk.subarray(0, cut))) socket.pause();
      if (tracker.atBoundary) finishWithClose(pendingClose.code, pendingClose.reason);
      return;
    }
    tracker.advance(chunk);
    if (!stream.write('data', chunk)) socket.pause();
  }

  stream.onDrain = () => socket.resume();
  stream.onData = (_kind, payload) => {
    touch();
    write(payload, (n) => stream.consumed(n));
  };
  stream.onClose = chainClose(stream.onClose, () => socket.destroy());
  socket.on('error', (err) => {
    clearTimeout(timer);
    if (!upgraded) stream.reject({ code: 'BROWSER_UNREACHABLE', message: `browser unreachable: ${err.message}`, status: 502 });
  });
  socket.on('close', () => {
    clearTimeout(timer);
    // The browser sent its own close frame if it closed cleanly; the bytes already carried it.
    stream.close(1000, 'browser closed the connection');
  });
  stream.start();

  return (code, reason) => {
    if (!upgraded) return void socket.destroy();
    if (tracker.atBoundary) return finishWithClose(code, reason);
    // Mid-frame: let the frame finish, then close (the browser may never finish it; the session's
    // teardown destroys the socket anyway).
    pendingClose = { code, reason };
  };
}

export function chainClose(
  prev: TunnelStream['onClose'],
  next: (code: number | undefined, reason: string | undefined, byPeer: boolean) => void,
): TunnelStream['onClose'] {
  return (code, reason, byPeer) => {
    prev?.(code, reason, byPeer);
    next(code, reason, byPeer);
  };
}
