import type { Clock, TimerHandle } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';

export type WarmPoolSettings = {
  /** The most browsers kept ready (WARM_POOL_SIZE); 0: no pool. */
  size: number;
  /** The fewest kept ready however quiet it is (WARM_POOL_MIN_SIZE). */
  minSize: number;
  /** A warm browser unclaimed this long is destroyed (and replaced while the pool is wanted). */
  maxIdleMs: number;
  /** Demand is counted over this window: the pool aims at as many as were asked for in it (buffer rule). */
  demandWindowMs: number;
};

export type WarmPoolMetrics = {
  claimed(hit: boolean): void;
  refilled(seconds: number): void;
  reaped(): void;
};

export type WarmPoolDeps<T> = {
  settings: WarmPoolSettings;
  /** Browsers the node can still take, sessions and warm ones counted: the pool never fills past it. */
  room: () => number;
  /** A fresh browser, ready; rejects (having cleaned up) on failure or abort. */
  launch: (signal: AbortSignal) => Promise<T>;
  destroy: (item: T) => Promise<void>;
  /** False once a ready browser died by itself: it is dropped, never handed out. */
  alive: (item: T) => boolean;
  clock: Clock;
  logger: Logger;
  metrics: WarmPoolMetrics;
};

/** A pool when one is configured (size > 0), else null: every session launches its own browser. */
export function createWarmPool<T>(
  configured: { settings: WarmPoolSettings; metrics: WarmPoolMetrics } | undefined,
  deps: Omit<WarmPoolDeps<T>, 'settings' | 'metrics'>,
): WarmPool<T> | null {
  return configured && configured.settings.size > 0 ? new WarmPool({ ...configured, ...deps }) : null;
}

/** How often the pool looks at idle browsers and its target when nothing else wakes it. */
const CHECK_INTERVAL_MS = 1000;
/** From a claim to the refill it wakes. */
const REFILL_DELAY_MS = 1000;
/** After a launch fails, the pool waits before the next: a broken browser is not relaunched in a loop. */
const FAILURE_BACKOFF_MS = 5000;

/**
 * Fresh browsers launched ahead of their sessions. A claim takes one at once (synchronously: in one
 * agent no two starts can take the same one) or misses; each browser serves one session and is never
 * returned. Refilled one launch at a time (a bounded rate, never past the node's room), towards a
 * target that follows demand, Agones-buffer style: as many as were claimed or missed in the last
 * window, within [minSize, size] (the full size until one window has passed). Unclaimed browsers idle
 * past `maxIdleMs`, and any above the target, are destroyed.
 */
export class WarmPool<T> {
  private readonly ready: Array<{ item: T; since: number }> = [];
  private readonly demand: number[] = [];
  private launching: AbortController | null = null;
  private pumping: Promise<void> | null = null;
  /** Woken while a pass ran: another pass follows at once. */
  private wokenDuringPass = false;
  private timer: TimerHandle | undefined;
  private stopped = false;
  private readonly startedAt: number;
  private pausedUntil = 0;

  constructor(private readonly deps: WarmPoolDeps<T>) {
    this.startedAt = deps.clock.now();
  }

  start(): void {
    this.wake();
  }

  /** A ready browser, or null (a miss: the caller launches one itself). */
  claim(): T | null {
    const now = this.deps.clock.now();
    this.demand.push(now);
    let taken = this.ready.shift();
    while (taken && !this.deps.alive(taken.item)) {
      void this.deps.destroy(taken.item);
      taken = this.ready.shift();
    }
    this.deps.metrics.claimed(taken !== undefined);
    // The refill waits a moment: launching a browser takes a burst of CPU the claiming session's start
    // (and its client's first commands) should not share.
    this.wakeIn(REFILL_DELAY_MS);
    return taken?.item ?? null;
  }

  /** Browsers ready now. */
  get idle(): number {
    return this.ready.length;
  }

  /** Browsers the pool holds: ready ones and the one launching. */
  get held(): number {
    return this.ready.length + (this.launching ? 1 : 0);
  }

  /** For metrics: ready, held (ready and launching), and the target now. */
  state(): { idle: number; held: number; target: number } {
    return { idle: this.idle, held: this.held, target: this.target() };
  }

  /** How many the pool aims to keep ready now. */
  target(): number {
    const { size, minSize, demandWindowMs } = this.deps.settings;
    const now = this.deps.clock.now();
    while (this.demand.length && this.demand[0]! <= now - demandWindowMs) this.demand.shift();
    if (now - this.startedAt < demandWindowMs) return size;
    return Math.min(size, Math.max(minSize, this.demand.length));
  }

  /** Gives up one held browser for a session that needs its room (a launch in flight goes first). */
  async evict(): Promise<boolean> {
    if (this.launching) {
      this.launching.abort(new Error('its room is needed by a session'));
      await this.pumping;
      return true;
    }
    const oldest = this.ready.shift();
    if (!oldest) return false;
    await this.deps.destroy(oldest.item);
    return true;
  }

  /** Destroys every browser it holds; nothing is launched after this resolves. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) this.deps.clock.clearTimeout(this.timer);
    this.launching?.abort(new Error('agent shutting down'));
    await this.pumping;
    await Promise.all(this.ready.splice(0).map(({ item }) => this.deps.destroy(item)));
  }

  /** A pass in `ms` (a pass running now is followed by another at once instead). */
  private wakeIn(ms: number): void {
    if (this.stopped) return;
    if (this.pumping) {
      this.wokenDuringPass = true;
      return;
    }
    if (this.timer !== undefined) this.deps.clock.clearTimeout(this.timer);
    this.timer = this.deps.clock.setTimeout(() => this.wake(), ms);
  }

  /** Runs a pass now unless one is running; the pass schedules the next check. */
  private wake(): void {
    if (this.stopped) return;
    if (this.pumping) {
      this.wokenDuringPass = true;
      return;
    }
    this.wokenDuringPass = false;
    if (this.timer !== undefined) this.deps.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.pumping = this.pass()
      .catch((err: unknown) => this.deps.logger.error('warm pool pass failed', { err }))
      .finally(() => {
        this.pumping = null;
        if (this.stopped) return;
        if (this.wokenDuringPass) this.wake();
        else this.timer = this.deps.clock.setTimeout(() => this.wake(), CHECK_INTERVAL_MS);
      });
  }

  private async pass(): Promise<void> {
    const { clock, settings } = this.deps;
    // Dead, idle too long, or more than wanted now: they go (the oldest first).
    const surplus: T[] = [];
    for (let i = this.ready.length - 1; i >= 0; i--) {
      if (this.deps.alive(this.ready[i]!.item)) continue;
      surplus.push(this.ready.splice(i, 1)[0]!.item);
      this.deps.metrics.reaped();
    }
    while (this.ready.length && (clock.now() - this.ready[0]!.since > settings.maxIdleMs || this.ready.length > this.target())) {
      surplus.push(this.ready.shift()!.item);
      this.deps.metrics.reaped();
    }
    await Promise.all(surplus.map((item) => this.deps.destroy(item)));
    while (!this.stopped && clock.now() >= this.pausedUntil && this.ready.length < this.target() && this.deps.room() > 0) {
      const abort = new AbortController();
      this.launching = abort;
      const begun = clock.now();
      try {
        const item = await this.deps.launch(abort.signal);
        if (this.stopped || abort.signal.aborted) {
          await this.deps.destroy(item);
          return;
        }
        this.ready.push({ item, since: clock.now() });
        this.deps.metrics.refilled((clock.now() - begun) / 1000);
      } catch (err) {
        if (!abort.signal.aborted) {
          this.deps.logger.warn('warm pool: a browser did not start', { err });
          this.pausedUntil = clock.now() + FAILURE_BACKOFF_MS;
        }
        return;
      } finally {
        this.launching = null;
      }
    }
  }
}
