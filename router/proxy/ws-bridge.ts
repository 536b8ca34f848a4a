import type { TunnelStream } from '../../shared/tunnel/stream.js';

/** The client's end of a proxied WebSocket, whatever the runtime's socket type is. */
export interface ClientSocket {
  send(payload: Uint8Array, binary: boolean, onSent: () => void): void;
  close(code: number, reason: string): void;
  pause(): void;
  resume(): void;
}

/** Codes an endpoint may put in a close frame; 1005/1006/1015 only describe what happened locally. */
export function sendableCloseCode(code: number | undefined, fallback = 1000): number {
  if (code === undefined) return fallback;
  if (code === 1000 || code === 1001 || (code >= 1002 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)) return code;
  return fallback;
}

/**
 * Joins a client WebSocket to a tunnel stream: messages keep their text/binary kind, each side's
 * backpressure pauses the other, and a close on either side reaches the other with code and reason.
 */
export function bridgeWebSocket(client: ClientSocket, stream: TunnelStream) {
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
