/**
 * Binary frame layout: [kind: u8][stream id: u32 BE][payload...]. Payload bytes never go through JSON,
 * so CDP traffic costs one copy per hop and no base64.
 */
export const FrameKind = { data: 1, text: 2, binary: 3 } as const;
export type FrameKind = keyof typeof FrameKind;
const KIND_BY_CODE: Record<number, FrameKind | undefined> = { 1: 'data', 2: 'text', 3: 'binary' };
export const FRAME_HEADER_BYTES = 5;

export function encodeFrame(kind: FrameKind, sid: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.byteLength);
  // Written byte by byte: a DataView per frame costs more than the frame on the hot path.
  out[0] = FrameKind[kind];
  out[1] = sid >>> 24;
  out[2] = (sid >>> 16) & 0xff;
  out[3] = (sid >>> 8) & 0xff;
  out[4] = sid & 0xff;
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

export type DecodedFrame = { kind: FrameKind; sid: number; payload: Uint8Array };

/** Returns null for a frame that is too short or of an unknown kind, so the caller can reject it. */
export function decodeFrame(frame: Uint8Array): DecodedFrame | null {
  if (frame.byteLength < FRAME_HEADER_BYTES) return null;
  const kind = KIND_BY_CODE[frame[0]!];
  if (!kind) return null;
  const sid = ((frame[1]! << 24) | (frame[2]! << 16) | (frame[3]! << 8) | frame[4]!) >>> 0;
  if (sid === 0) return null;
  return { kind, sid, payload: frame.subarray(FRAME_HEADER_BYTES) };
}
