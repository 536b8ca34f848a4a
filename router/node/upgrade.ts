import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorBody, errorHeaders, toAppError } from '../http/errors.js';

/** Answers an upgrade request with a plain HTTP error carrying the usual JSON error body. */
export function rejectUpgrade(socket: Duplex, err: unknown): void {
  const e = toAppError(err);
  const body = JSON.stringify(errorBody(e));
  const extra = Object.entries(errorHeaders(e)).map(([k, v]) => `${k}: ${v}\r\n`);
  socket.end(
    `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}\r\n` +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      extra.join('') +
      'Connection: close\r\n\r\n' +
      body,
  );
}
