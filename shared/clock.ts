/** Time and timers behind one port, so timeouts can be driven by a test instead of by sleeping. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}
export type TimerHandle = { readonly __timer: unique symbol } | ReturnType<typeof setTimeout>;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    // Never keep a process alive just for a timer: shutdown paths close what matters explicitly.
    (t as { unref?: () => void }).unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clock.clearTimeout(t);
      reject(signal?.reason);
    };
    const t = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Settles like `work`, unless `ms` pass first: then `onTimeout` runs (to abort what is in flight) and
 * the promise rejects with `error()`. The one deadline helper; timers come from the injected clock.
 */
export async function withDeadline<T>(clock: Clock, work: Promise<T>, ms: number, opts: { error: () => Error; onTimeout?: () => void }): Promise<T> {
  let timer: TimerHandle | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = clock.setTimeout(() => {
          opts.onTimeout?.();
          reject(opts.error());
        }, ms);
      }),
    ]);
  } finally {
    if (timer !== undefined) clock.clearTimeout(timer);
  }
}

/** Capped exponential backoff with full jitter: attempt 0 → [0, base), growing to [0, cap). */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * Runs `tick` every `intervalMs` with no overlap: the next run is scheduled only after the previous one
 * settles, and errors are handed to `onError` instead of escaping the loop.
 */
export function startLoop(opts: { clock: Clock; intervalMs: number; tick: () => Promise<void> | void; onError: (err: unknown) => void }): { stop(): Promise<void> } {
  let stopped = false;
  let timer: TimerHandle | undefined;
  let running: Promise<void> = Promise.resolve();
  const schedule = () => {
    if (stopped) return;
    timer = opts.clock.setTimeout(() => {
      running = (async () => {
        try {
          await opts.tick();
        } catch (err) {
          opts.onError(err);
        }
      })().finally(schedule);
    }, opts.intervalMs);
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      if (timer !== undefined) opts.clock.clearTimeout(timer);
      await running;
    },
  };
}
