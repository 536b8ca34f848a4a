/**
 * Just enough of RFC 6455 framing to splice raw WebSocket bytes: find frame boundaries in one
 * direction of a byte stream (payloads are skipped, never parsed) and build a close frame, so a proxy
 * that forwards bytes untouched can still end a connection with a proper close frame and reason.
 */
export class FrameBoundaryTracker {
  private header: number[] = [];
  private headerSize = 2;
  private payloadLeft = 0;
  /** A close frame (opcode 8) has passed: the endpoint said goodbye itself. */
  sawClose = false;

  get atBoundary(): boolean {
    return this.header.length === 0 && this.payloadLeft === 0;
  }

  /**
   * Consumes `chunk` from `offset`. With `stopAtBoundary`, stops at the first boundary reached (at once
   * when already at one). Returns the offset where it stopped.
   */
  advance(chunk: Uint8Array, offset = 0, stopAtBoundary = false): number {
    let i = offset;
    while (i < chunk.length) {
      if (stopAtBoundary && this.atBoundary) return i;
      if (this.payloadLeft > 0) {
        const skip = Math.min(this.payloadLeft, chunk.length - i);
        this.payloadLeft -= skip;
        i += skip;
        continue;
      }
      this.header.push(chunk[i++]!);
      if (this.header.length === 2) {
        const len7 = this.header[1]! & 0x7f;
        this.headerSize = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (this.header[1]! & 0x80 ? 4 : 0);
      }
      if (this.header.length >= 2 && this.header.length === this.headerSize) {
        if ((this.header[0]! & 0x0f) === 0x8) this.sawClose = true;
        this.payloadLeft = payloadLength(this.header);
        this.header = [];
      }
    }
    return i;
  }
}

function payloadLength(h: number[]): number {
  const len7 = h[1]! & 0x7f;
  if (len7 < 126) return len7;
  if (len7 === 126) return (h[2]! << 8) | h[3]!;
  let n = 0;
  for (let k = 2; k < 10; k++) n = n * 256 + h[k]!;
  return n;
}

/** The header of one unmasked (server-to-client) frame: FIN, opcode, payload length; the payload follows as is. */
export function serverFrameHeader(opcode: number, length: number): Uint8Array {
  const out = new Uint8Array(length < 126 ? 2 : length < 65536 ? 4 : 10);
  const view = new DataView(out.buffer);
  out[0] = 0x80 | opcode;
  if (length < 126) out[1] = length;
  else if (length < 65536) {
    out[1] = 126;
    view.setUint16(2, length);
  } else {
    out[1] = 127;
    view.setBigUint64(2, BigInt(length));
  }
  return out;
}

/** An unmasked (server-to-client) close frame. */
export function closeFrame(code: number, reason: string): Uint8Array {
  const text = new TextEncoder().encode(reason).subarray(0, 123);
  const header = serverFrameHeader(0x8, 2 + text.length);
  const out = new Uint8Array(header.length + 2 + text.length);
  out.set(header);
  out[header.length] = code >> 8;
  out[header.length + 1] = code & 0xff;
  out.set(text, header.length + 2);
  return out;
}

/** Codes an endpoint may put in a close frame; 1005/1006/1015 only describe what happened locally. */
export function sendableCloseCode(code: number | undefined, fallback = 1000): number {
  if (code === undefined) return fallback;
  if (code === 1000 || code === 1001 || (code >= 1002 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)) return code;
  return fallback;
}
