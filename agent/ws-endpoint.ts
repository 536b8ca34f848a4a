import { createHash } from 'node:crypto';
import * as wsModule from 'ws';
import { AppError } from '../shared/errors.js';
import type { StreamSpec } from '../shared/tunnel/protocol.js';
import type { TunnelStream } from '../shared/tunnel/stream.js';
import { closeFrame, sendableCloseCode, serverFrameHeader } from '../shared/ws-frames.js';
import { chainClose } from './splice.js';

/** The client's WebSocket, ended here at the agent (the browser behind it speaks over a pipe, not a socket). */
export type WsEndpoint = {
  send(message: Buffer): boolean;
  onceWritable(fn: () => void): void;
  /** Ends the connection with a close frame and reason. */
  close(code: number, reason: string): void;
};

export type WsHandlers = {
  /** One complete message; call `consumed` once it was handed on (credit for the tunnel). */
  onMessage(data: Buffer, consumed: () => void): void;
  onClose(): void;
};

type ReceiverError = Error & { code?: string };

/** `ws`'s frame parser (exported by `ws` as `Receiver`, not typed by @types/ws). */
type Receiver = {
  write(chunk: Uint8Array): boolean;
  on(event: 'message', fn: (data: Buffer, isBinary: boolean) => void): Receiver;
  on(event: 'conclude', fn: (code: number, reason: Buffer) => void): Receiver;
  on(event: 'ping', fn: (data: Buffer) => void): Receiver;
  on(event: 'error', fn: (err: ReceiverError) => void): Receiver;
};
const ReceiverClass = (wsModule as unknown as { Receiver: new (opts: { isServer: boolean; maxPayload: number; skipUTF8Validation: boolean }) => Receiver }).Receiver;

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const CLOSE_FOR_ERROR: Record<string, number> = { WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: 1009, WS_ERR_INVALID_UTF8: 1007 };

/**
 * Answers a client's WebSocket upgrade carried by `stream` and hands its messages to `handlers`:
 * `ws` streams carry whole messages already (the router ended the client's socket); `upgrade` streams
 * carry the client's raw bytes, parsed here with `ws`'s own frame parser (`maxPayload` bounds one
 * message: 1009 beyond it) and answered with unmasked frames.
 */
export function acceptWebSocket(stream: TunnelStream, spec: StreamSpec, handlers: WsHandlers, opts: { maxPayload: number }): WsEndpoint | null {
  return spec.kind === 'upgrade' ? acceptRaw(stream, spec, handlers, opts) : acceptMessages(stream, handlers);
}

function acceptMessages(stream: TunnelStream, handlers: WsHandlers): WsEndpoint {
  stream.accept({ status: 101, headers: [] });
  stream.onData = (_kind, payload) => handlers.onMessage(asBuffer(payload), () => stream.consumed(payload.byteLength));
  stream.onClose = chainClose(stream.onClose, () => handlers.onClose());
  stream.start();
  return {
    send: (message) => stream.write('text', message),
    onceWritable: (fn) => (stream.onDrain = once(fn)),
    close: (code, reason) => stream.close(sendableCloseCode(code), reason),
  };
}

function acceptRaw(stream: TunnelStream, spec: StreamSpec, handlers: WsHandlers, opts: { maxPayload: number }): WsEndpoint | null {
  const key = spec.headers['sec-websocket-key'];
  if (!key || !/^[A-Za-z0-9+/]{22}==$/.test(key)) {
    stream.reject(new AppError('BAD_REQUEST', 'not a WebSocket upgrade (Sec-WebSocket-Key)'));
    return null;
  }
  const accept = createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');
  stream.accept({
    status: 101,
    headers: [
      ['upgrade', 'websocket'],
      ['connection', 'Upgrade'],
      ['sec-websocket-accept', accept],
    ],
  });
  const receiver = new ReceiverClass({ isServer: true, maxPayload: opts.maxPayload, skipUTF8Validation: true });
  let closing = false;
  const sendFrame = (opcode: number, payload: Buffer): boolean => {
    stream.write('data', serverFrameHeader(opcode, payload.length));
    return stream.write('data', payload);
  };
  const close = (code: number, reason: string) => {
    if (closing || stream.isClosed) return;
    closing = true;
    stream.write('data', closeFrame(sendableCloseCode(code), reason));
    stream.close(sendableCloseCode(code), reason);
  };
  // Credit goes back as bytes arrive, except while a message handed on waits for room downstream.
  let held = false;
  let owed = 0;
  receiver.on('message', (data) => {
    held = true;
    handlers.onMessage(data, () => {
      held = false;
      if (owed > 0) stream.consumed(owed);
      owed = 0;
    });
  });
  receiver.on('ping', (data) => sendFrame(0xa, data));
  receiver.on('conclude', (code, reason) => close(code === 1005 ? 1000 : code, reason.toString()));
  receiver.on('error', (err) => close(CLOSE_FOR_ERROR[err.code ?? ''] ?? 1002, err.message.slice(0, 100)));
  stream.onData = (_kind, payload) => {
    if (!closing) receiver.write(payload);
    if (held) owed += payload.byteLength;
    else stream.consumed(payload.byteLength);
  };
  stream.onClose = chainClose(stream.onClose, () => handlers.onClose());
  stream.start();
  return {
    send: (message) => sendFrame(0x1, message),
    onceWritable: (fn) => (stream.onDrain = once(fn)),
    close,
  };
}

function asBuffer(payload: Uint8Array): Buffer {
  return Buffer.isBuffer(payload) ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
