import { backoffDelay, sleep, withDeadline, type Clock } from '../../../shared/clock.js';
import type { Logger } from '../../../shared/logger.js';

/** HTTP status of a Kubernetes API failure, whatever the client wrapped it in. */
export function statusOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown; response?: { statusCode?: unknown } };
  for (const v of [e.code, e.statusCode, e.response?.statusCode]) if (typeof v === 'number') return v;
  return undefined;
}

const retriable = (status: number | undefined) => status === undefined || status === 429 || status >= 500;

/**
 * Runs an idempotent Kubernetes call with a per-attempt timeout, retrying throttling, server errors
 * and transport failures with capped, jittered backoff. Callers make a call idempotent first (a 409
 * on create means it exists; a 404 on delete means it is gone) by handling those statuses in `call`.
 */
export async function withRetry<T>(
  what: string,
  call: () => Promise<T>,
  opts: { clock: Clock; logger: Logger; attempts?: number; timeoutMs?: number; signal?: AbortSignal },
): Promise<T> {
  const attempts = opts.attempts ?? 6;
  for (let i = 0; ; i++) {
    const started = opts.clock.now();
    // Every attempt at debug, with its outcome: what a slow start spent its time on.
    const logged = (outcome: 'ok' | 'retrying' | 'failed', err?: unknown) =>
      opts.logger.debug('kubernetes call', { call: what, attempt: i + 1, ms: opts.clock.now() - started, outcome, ...(err ? { status: statusOf(err) ?? null } : {}) });
    try {
      const ms = opts.timeoutMs ?? 10_000;
      const result = await withDeadline(opts.clock, call(), ms, { error: () => new Error(`${what} timed out after ${ms} ms`) });
      logged('ok');
      return result;
    } catch (err) {
      if (i + 1 >= attempts || !retriable(statusOf(err)) || opts.signal?.aborted) {
        logged('failed', err);
        throw err;
      }
      logged('retrying', err);
      await sleep(opts.clock, backoffDelay(i, 200, 5000), opts.signal);
    }
  }
}
