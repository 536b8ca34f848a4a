import { describe, expect, it } from 'vitest';
import * as wsModule from 'ws';

// The ws library exports its frame writer; @types/ws does not declare it.
const { Sender } = wsModule as unknown as { Sender: { frame(data: Buffer, opts: object): Buffer[] } };
import { closeFrame, FrameBoundaryTracker } from '../../shared/ws-frames.js';

/** Real frames as the `ws` library writes them. */
function frames(payloadSizes: number[], mask = false): { bytes: Uint8Array; ends: number[] } {
  const parts: Buffer[] = [];
  const ends: number[] = [];
  let at = 0;
  for (const n of payloadSizes) {
    const list = Sender.frame(Buffer.alloc(n, 7), { fin: true, opcode: 2, mask, readOnly: false, rsv1: false, maskBuffer: mask ? Buffer.from([1, 2, 3, 4]) : undefined } as never);
    const f = Buffer.concat(list);
    parts.push(f);
    at += f.length;
    ends.push(at);
  }
  return { bytes: Buffer.concat(parts), ends };
}

describe('FrameBoundaryTracker', () => {
  it('finds every boundary, whatever the chunking, for 7-, 16- and 64-bit lengths, masked or not', () => {
    for (const mask of [false, true]) {
      const { bytes, ends } = frames([0, 5, 125, 126, 300, 70_000], mask);
      for (const chunk of [1, 3, 7, 1000, bytes.length]) {
        const t = new FrameBoundaryTracker();
        const seen: number[] = [];
        for (let start = 0; start < bytes.length; start += chunk) {
          const piece = bytes.subarray(start, Math.min(bytes.length, start + chunk));
          let off = 0;
          while (off < piece.length) {
            off = t.advance(piece, off, false);
          }
          if (t.atBoundary) seen.push(start + piece.length);
        }
        expect(t.atBoundary).toBe(true);
        for (const s of seen) expect(ends).toContain(s);
      }
    }
  });

  it('stops at the first boundary when asked', () => {
    const { bytes, ends } = frames([10, 10]);
    const t = new FrameBoundaryTracker();
    expect(t.advance(bytes, 0, true)).toBe(0); // already at one: consumes nothing
    t.advance(bytes.subarray(0, 1));
    expect(t.atBoundary).toBe(false);
    const mid = t.advance(bytes, 1, true);
    expect(mid).toBe(ends[0]);
    expect(t.atBoundary).toBe(true);
  });

  it('builds a close frame the ws library can read', () => {
    const f = closeFrame(1001, 'session deleted');
    expect([...f.subarray(0, 4)]).toEqual([0x88, 2 + 15, 0x03, 0xe9]);
    expect(new TextDecoder().decode(f.subarray(4))).toBe('session deleted');
  });
});
