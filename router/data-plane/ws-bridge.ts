import type { TunnelStream } from '../../shared/tunnel/stream.js';
import { sendableCloseCode } from '../../shared/ws-frames.js';

/** The client's end of a proxied WebSocket, whatever the runtime's socket type is. */
export interface ClientSocket {
  send(payload: Uint8Array, binary: boolean, onSent: () => void): void;
  close(code: number, reason: string): void;
  pause(): void;
  resume(): void;
}

/**
 * Joins a client WebSocket to a tunnel stream: messages keep their text/binary kind, each side's
 * backpressure pauses the other, and a close on either side reaches the other with code and reason.
 */
export function bridgeMessages(client: ClientSocket, stream: TunnelStream) {
  let closed = false;
  stream.onData = (kind, payload) => {
    client.send(payload, kind !== 'text', () => stream.consumed(payload.byteLength));
  };
  stream.onDrain = () => client.resume();
  stream.onClose = (code, reason) => {
    if (closed) return;
    closed = true;
    client.close(sendableCloseCode(code, 1011), reason ?? '');
  };
  stream.start();
  return {
    fromClient(payload: Uint8Array, binary: boolean): void {
      if (closed) return;
      if (!stream.write(binary ? 'binary' : 'text', payload)) client.pause();
    },
    clientClosed(code: number | undefined, reason: string): void {
      if (closed) return;
      closed = true;
      stream.close(sendableCloseCode(code, 1000), reason);
    },
  };
}
