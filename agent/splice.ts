import { request } from 'node:http';
import type { Socket } from 'node:net';
import { AppError } from '../shared/errors.js';
import { creditingWriter, nodeHeaderPairs } from '../shared/node-socket.js';
import type { StreamSpec } from '../shared/tunnel/protocol.js';
import type { TunnelStream } from '../shared/tunnel/stream.js';
import { closeFrame, FrameBoundaryTracker } from '../shared/ws-frames.js';

const CONNECT_TIMEOUT_MS = 10_000;

/**
 * A WebSocket carried as raw bytes: the agent sends the client's upgrade request to the browser
 * (Node's `http.request` and its 'upgrade' event) and then moves bytes both ways untouched (no message
 * parsing, like a single-hop proxy). Only frame boundaries of the browser's direction are tracked, so
 * the agent can end the connection with a proper close frame and reason when the session ends, or
 * when the browser vanished without one (1011). Returns the session-end closer.
 */
export function spliceUpgrade(
  stream: TunnelStream,
  spec: StreamSpec,
  host: string,
  port: number,
  { touch, abnormalClose }: { touch: () => void; abnormalClose: () => void },
): (code: number, reason: string) => void {
  const tracker = new FrameBoundaryTracker();
  let socket: Socket | null = null;
  let pendingClose: { code: number; reason: string } | null = null;
  const req = request({
    host,
    port,
    path: spec.path,
    method: 'GET',
    headers: { ...spec.headers, host: `${host}:${port}`, connection: 'Upgrade', upgrade: 'websocket' },
    timeout: CONNECT_TIMEOUT_MS,
    agent: false,
  });

  const finishWithClose = (code: number, reason: string) => {
    if (stream.isClosed) return;
    stream.write('data', closeFrame(code, reason));
    stream.close(code, reason);
    socket?.destroy();
  };

  function forward(chunk: Buffer): void {
    if (pendingClose) {
      const cut = tracker.advance(chunk, 0, true);
      if (cut > 0 && !stream.write('data', chunk.subarray(0, cut))) socket?.pause();
      if (tracker.atBoundary) finishWithClose(pendingClose.code, pendingClose.reason);
      return;
    }
    tracker.advance(chunk);
    if (!stream.write('data', chunk)) socket?.pause();
  }

  req.on('upgrade', (res, upgraded: Socket, head: Buffer) => {
    socket = upgraded;
    // The connect timeout stays armed on the socket after the upgrade; an idle CDP socket is fine.
    upgraded.setTimeout(0);
    upgraded.setNoDelay(true);
    stream.accept({ status: 101, headers: nodeHeaderPairs(res.headers) });
    const write = creditingWriter(upgraded);
    const consumed = (n: number) => stream.consumed(n);
    stream.onData = (_kind, payload) => {
      touch();
      write(payload, consumed);
    };
    stream.onDrain = () => upgraded.resume();
    upgraded.on('data', (chunk: Buffer) => {
      touch();
      forward(chunk);
    });
    upgraded.on('error', () => {});
    upgraded.on('close', () => {
      // A browser that closed the socket properly sent its close frame, and the bytes already carried
      // it; one that vanished did not, and the session's end decides what the client hears.
      if (!tracker.sawClose && tracker.atBoundary) return abnormalClose();
      stream.close(1000, 'browser closed the connection');
    });
    if (head.length) forward(head);
    stream.start();
  });
  req.on('response', (res) => {
    res.resume();
    stream.reject(new AppError('BROWSER_UNREACHABLE', `browser answered ${res.statusCode} instead of upgrading`));
  });
  req.on('timeout', () => req.destroy(new Error('browser did not answer the upgrade in time')));
  req.on('error', (err) => {
    if (!socket) stream.reject(new AppError('BROWSER_UNREACHABLE', `browser unreachable: ${err.message}`));
  });
  stream.onClose = chainClose(stream.onClose, () => {
    req.destroy();
    socket?.destroy();
  });
  req.end();

  return (code, reason) => {
    if (!socket) return void req.destroy();
    if (tracker.atBoundary) return finishWithClose(code, reason);
    // Mid-frame: let the frame finish, then close (the browser may never finish it; the session's
    // teardown destroys the socket anyway).
    pendingClose = { code, reason };
  };
}

export function chainClose(prev: TunnelStream['onClose'], next: (code: number | undefined, reason: string | undefined, byPeer: boolean) => void): TunnelStream['onClose'] {
  return (code, reason, byPeer) => {
    prev?.(code, reason, byPeer);
    next(code, reason, byPeer);
  };
}
