import { describe, expect, it } from 'vitest';
import { WarmPool, type WarmPoolSettings } from '../../agent/runtime/warm-pool.js';
import { createLogger } from '../../shared/logger.js';
import { ManualClock } from '../helpers/clock.js';

const settle = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0));
};

/** A pool of numbered "browsers" whose launches finish at once, with the node's room set by the test. */
function setup(over: Partial<WarmPoolSettings> = {}, room = 100) {
  const clock = new ManualClock();
  const state = { room, launched: 0, destroyed: [] as number[], dead: new Set<number>(), failNext: false, counts: { hit: 0, miss: 0, reaped: 0, refilled: 0 } };
  const pool: WarmPool<number> = new WarmPool<number>({
    settings: { size: 4, minSize: 1, maxIdleMs: 60_000, demandWindowMs: 30_000, ...over },
    room: (): number => state.room - pool.held,
    launch: async () => {
      if (state.failNext) {
        state.failNext = false;
        throw new Error('chromium exited before it was ready');
      }
      return ++state.launched;
    },
    destroy: async (n) => void state.destroyed.push(n),
    alive: (n) => !state.dead.has(n),
    clock,
    logger: createLogger({ level: 'silent' }),
    metrics: {
      claimed: (hit) => void state.counts[hit ? 'hit' : 'miss']++,
      refilled: () => void state.counts.refilled++,
      reaped: () => void state.counts.reaped++,
    },
  });
  /** Lets time pass a second at a time, so the pool's passes run as they would. */
  const pass = async (ms: number) => {
    for (let t = 0; t < ms; t += 1000) {
      clock.advance(1000);
      await settle();
    }
  };
  return { clock, pool, state, pass };
}

describe('WarmPool', () => {
  it('fills to its size, hands each browser out once, and refills after a claim', async () => {
    const { pool, state, pass } = setup();
    pool.start();
    await settle();
    expect(pool.idle).toBe(4);
    const claimed = [pool.claim(), pool.claim()];
    expect(claimed).toEqual([1, 2]);
    expect(pool.idle).toBe(2);
    await pass(2000);
    expect(pool.idle).toBe(4);
    expect(pool.claim()).toBe(3); // oldest first
    expect(state.counts).toMatchObject({ hit: 3, miss: 0 });
    await pool.stop();
  });

  it('never holds more than the node has room for; a claim on an empty pool is a miss', async () => {
    const { pool, state, pass } = setup({}, 2);
    pool.start();
    await pass(3000);
    expect(pool.held).toBe(2);
    expect([pool.claim(), pool.claim(), pool.claim()]).toEqual([1, 2, null]);
    state.room = 0; // sessions took the room
    await pass(3000);
    expect(pool.held).toBe(0);
    expect(state.counts).toMatchObject({ hit: 2, miss: 1 });
    await pool.stop();
  });

  it('destroys browsers idle past maxIdle and dead ones, and replaces them', async () => {
    const { pool, state, pass } = setup({ maxIdleMs: 5000, size: 2, minSize: 2 });
    pool.start();
    await settle();
    expect(pool.idle).toBe(2);
    state.dead.add(1);
    await pass(1000);
    expect(state.destroyed).toEqual([1]);
    expect(pool.idle).toBe(2);
    await pass(6000);
    expect(state.destroyed).toEqual(expect.arrayContaining([1, 2, 3]));
    expect(pool.idle).toBe(2);
    expect(state.counts.reaped).toBeGreaterThanOrEqual(3);
    // A browser that died while ready is never handed out.
    state.dead.add(state.launched);
    state.dead.add(state.launched - 1);
    expect(pool.claim()).toBeNull();
    await pool.stop();
  });

  it('follows demand: full size for the first window, then as many as were asked for in a window, never below minSize', async () => {
    const { pool, pass } = setup({ size: 4, minSize: 1, demandWindowMs: 30_000 });
    pool.start();
    await settle();
    expect(pool.target()).toBe(4);
    pool.claim();
    pool.claim();
    await pass(31_000);
    // The two claims fell out of the window: quiet, so the pool shrinks to its floor.
    expect(pool.target()).toBe(1);
    expect(pool.idle).toBe(1);
    for (let i = 0; i < 3; i++) pool.claim();
    expect(pool.target()).toBe(3);
    await pass(3000);
    expect(pool.idle).toBe(3);
    await pool.stop();
  });

  it('a failed launch waits before the next; evict gives up a ready browser; stop destroys everything', async () => {
    const { pool, state, pass } = setup({ size: 2, minSize: 2 });
    state.failNext = true;
    pool.start();
    await settle();
    expect(pool.idle).toBe(0);
    await pass(2000);
    expect(pool.idle).toBe(0); // still backing off
    await pass(5000);
    expect(pool.idle).toBe(2);
    expect(await pool.evict()).toBe(true);
    expect(pool.idle).toBe(1);
    await pool.stop();
    expect(pool.held).toBe(0);
    expect(state.destroyed).toHaveLength(2);
    await pass(5000);
    expect(state.launched).toBe(2); // nothing launched after stop
  });
});
