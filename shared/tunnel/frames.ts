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
  out[0] = FrameKind[kind];
  new DataView(out.buffer).setUint32(1, sid);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

export type DecodedFrame = { kind: FrameKind; sid: number; payload: Uint8Array };

/** Returns null for a frame that is too short or of an unknown kind, so the caller can reject it. */
export function decodeFrame(frame: Uint8Array): DecodedFrame | null {
  if (frame.byteLength < FRAME_HEADER_BYTES) return null;
  const kind = KIND_BY_CODE[frame[0]!];
  if (!kind) return null;
  const sid = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(1);
  if (sid === 0) return null;
  return { kind, sid, payload: frame.subarray(FRAME_HEADER_BYTES) };
}
