import type { RedisCommands } from '../store/redis-commands.js';

/** `limit` requests per `periodSec`, at most `burst` at once (GCRA); `field`: its RateLimit-Policy item. */
export type RatePolicy = { name: string; limit: number; periodSec: number; burst: number; field: string };

const PERIODS: Record<string, number> = { s: 1, sec: 1, second: 1, m: 60, min: 60, minute: 60, h: 3600, hour: 3600 };

/** `60/min`, `10/s,burst=20`, `1000/hour`; `off` (or empty) is no limit. */
export function parseRatePolicy(name: string, text: string | undefined): RatePolicy | null {
  const t = (text ?? '').trim().toLowerCase();
  if (t === '' || t === 'off' || t === 'none') return null;
  const m = /^(\d+)\s*\/\s*([a-z]+)\s*(?:,\s*burst\s*=\s*(\d+))?$/.exec(t);
  const periodSec = m ? PERIODS[m[2]!] : undefined;
  if (!m || periodSec === undefined) throw new Error(`"${text}" is not a rate such as 60/min or 10/s,burst=20 (or off)`);
  const limit = Number(m[1]);
  const burst = m[3] === undefined ? limit : Number(m[3]);
  if (limit < 1 || burst < 1 || limit > 1_000_000_000) throw new Error(`"${text}": the rate and the burst must be at least 1`);
  return { name, limit, periodSec, burst, field: `"${name}";q=${limit};w=${periodSec}` };
}

/** The emission interval in whole microseconds: exact integer arithmetic in JS and in Lua. */
const intervalUs = (p: RatePolicy) => Math.max(1, Math.round((p.periodSec * 1_000_000) / p.limit));

/** `cost`: how many requests to charge at once (default 1; see BatchingRateLimiter). */
export type Bucket = { key: string; policy: RatePolicy; cost?: number };
export type BucketResult = { policy: RatePolicy; remaining: number; resetMs: number; retryAfterMs: number };
export type RateDecision = { allowed: boolean; buckets: BucketResult[] };

/** Charges one request to every bucket, or to none when any is empty. Shared by every replica when in Redis. */
export interface RateLimiter {
  take(buckets: Bucket[], nowMs: number): Promise<RateDecision>;
  /** The decision when it can be made without I/O (a batch this replica holds), else null. */
  takeLocal?(buckets: Bucket[], nowMs: number): RateDecision | null;
}

type Raw = { remaining: number; resetUs: number; retryAfterUs: number };

const toDecision = (buckets: Bucket[], allowed: boolean, raw: Raw[]): RateDecision => ({
  allowed,
  buckets: buckets.map((b, i) => ({
    policy: b.policy,
    remaining: raw[i]!.remaining,
    resetMs: Math.ceil(raw[i]!.resetUs / 1000),
    retryAfterMs: Math.ceil(raw[i]!.retryAfterUs / 1000),
  })),
});

/** The limiter of a store-less router (`npm start`): the same GCRA as the Redis script, in memory. */
export class MemoryRateLimiter implements RateLimiter {
  private readonly tats = new Map<string, number>();
  private sweptAt = 0;

  async take(buckets: Bucket[], nowMs: number): Promise<RateDecision> {
    const now = nowMs * 1000;
    this.sweep(now);
    const raw: Raw[] = [];
    const next: number[] = [];
    let allowed = true;
    for (const { key, policy, cost = 1 } of buckets) {
      const interval = intervalUs(policy);
      const tat = Math.max(this.tats.get(`${policy.name}:${key}`) ?? now, now);
      const nextTat = tat + interval * cost;
      const allowAt = nextTat - policy.burst * interval;
      if (allowAt > now) {
        allowed = false;
        raw.push({ remaining: 0, resetUs: tat - now, retryAfterUs: allowAt - now });
      } else {
        raw.push({ remaining: Math.floor((now - allowAt) / interval), resetUs: nextTat - now, retryAfterUs: 0 });
      }
      next.push(nextTat);
    }
    buckets.forEach((b, i) => {
      if (allowed) this.tats.set(`${b.policy.name}:${b.key}`, next[i]!);
      else if (raw[i]!.retryAfterUs === 0) {
        const cost = b.cost ?? 1;
        raw[i] = { ...raw[i]!, remaining: raw[i]!.remaining + cost, resetUs: raw[i]!.resetUs - intervalUs(b.policy) * cost };
      }
    });
    return toDecision(buckets, allowed, raw);
  }

  /** A bucket whose TAT passed is full again: forget it, so memory follows the active callers only. */
  private sweep(now: number): void {
    if (now - this.sweptAt < 10_000_000) return;
    this.sweptAt = now;
    for (const [k, tat] of this.tats) if (tat <= now) this.tats.delete(k);
  }
}

/** GCRA in Redis (redis-scripts.ts RATE_LIMIT): one round trip for every bucket a request is charged to. */
export class RedisRateLimiter implements RateLimiter {
  constructor(private readonly opts: { commands: RedisCommands; keyPrefix: string }) {}

  async take(buckets: Bucket[], nowMs: number): Promise<RateDecision> {
    const keys = buckets.map((b) => `${this.opts.keyPrefix}rl:${b.policy.name}:${b.key}`);
    const args: Array<string | number> = [Math.round(nowMs * 1000)];
    for (const b of buckets) args.push(intervalUs(b.policy), b.policy.burst, b.cost ?? 1);
    const out = ((await this.opts.commands.script('rate', keys, args)) as unknown[]).map(Number);
    const raw = buckets.map((_, i) => ({ remaining: out[1 + i * 3]!, resetUs: out[2 + i * 3]!, retryAfterUs: out[3 + i * 3]! }));
    return toDecision(buckets, out[0] === 1, raw);
  }
}

/**
 * Takes tokens of a busy bucket in small batches, so a key making hundreds of requests a second costs
 * Redis one call per batch instead of one per request. A batch belongs to the replica that took it
 * and lapses after `leaseMs`; what is unused then is lost. So the limit can only come out stricter
 * than configured (by at most a batch per replica per lease), never looser. Requests charged to more
 * than one bucket (creates), and buckets whose burst is small (where one batch would matter), always
 * go to the store one by one, so those limits hold exactly.
 */
export class BatchingRateLimiter implements RateLimiter {
  private readonly leases = new Map<string, { left: number; until: number; remaining: number; resetMs: number }>();
  private readonly fetching = new Map<string, Promise<RateDecision>>();

  constructor(
    private readonly inner: RateLimiter,
    private readonly opts: { leaseMs: number; maxBatch: number } = { leaseMs: 1000, maxBatch: 100 },
  ) {}

  /** A tenth of the burst, no more than a lease's worth at the full rate. */
  batchOf(policy: RatePolicy): number {
    const perLease = Math.floor((policy.limit / policy.periodSec) * (this.opts.leaseMs / 1000));
    return Math.max(1, Math.min(Math.floor(policy.burst / 10), perLease, this.opts.maxBatch));
  }

  takeLocal(buckets: Bucket[], now: number): RateDecision | null {
    const only = buckets.length === 1 ? buckets[0]! : null;
    if (!only) return null;
    const lease = this.leases.get(`${only.policy.name}:${only.key}`);
    if (!lease || lease.left <= 0 || lease.until <= now) return null;
    lease.left--;
    return { allowed: true, buckets: [{ policy: only.policy, remaining: lease.remaining + lease.left, resetMs: lease.resetMs, retryAfterMs: 0 }] };
  }

  async take(buckets: Bucket[], now: number): Promise<RateDecision> {
    const only = buckets.length === 1 ? buckets[0]! : null;
    if (!only || this.batchOf(only.policy) === 1) return this.inner.take(buckets, now);
    const id = `${only.policy.name}:${only.key}`;
    for (;;) {
      const local = this.takeLocal(buckets, now);
      if (local) return local;
      // One fetch per bucket at a time: whoever arrives meanwhile waits for it, then spends from it.
      const pending = this.fetching.get(id);
      if (pending) {
        const d = await pending;
        if (!d.allowed) return d;
        continue;
      }
      const fetch = this.fetchBatch(only, id, now);
      this.fetching.set(id, fetch);
      try {
        const d = await fetch;
        if (!d.allowed) return d;
      } finally {
        this.fetching.delete(id);
      }
    }
  }

  private async fetchBatch(bucket: Bucket, id: string, now: number): Promise<RateDecision> {
    const batch = this.batchOf(bucket.policy);
    let granted = batch;
    let d = await this.inner.take([{ ...bucket, cost: batch }], now);
    // Near the limit a whole batch may not fit where one request still does.
    if (!d.allowed) [granted, d] = [1, await this.inner.take([{ ...bucket, cost: 1 }], now)];
    if (d.allowed) this.leases.set(id, { left: granted, until: now + this.opts.leaseMs, remaining: d.buckets[0]!.remaining, resetMs: d.buckets[0]!.resetMs });
    if (this.leases.size > 10_000) for (const [k, l] of this.leases) if (l.until <= now) this.leases.delete(k);
    return d;
  }
}

/** IETF httpapi RateLimit fields (draft-ietf-httpapi-ratelimit-headers): the policies and what is left of each. */
export function rateLimitHeaders(decision: RateDecision): Record<string, string> {
  let policy = '';
  let state = '';
  for (const b of decision.buckets) {
    const sep = policy ? ', ' : '';
    policy += sep + b.policy.field;
    state += `${sep}"${b.policy.name}";r=${b.remaining};t=${Math.ceil(b.resetMs / 1000)}`;
  }
  return policy ? { 'ratelimit-policy': policy, ratelimit: state } : {};
}

/** Seconds until every exhausted bucket has room again. */
export const retryAfterSec = (decision: RateDecision): number => Math.max(1, Math.ceil(Math.max(0, ...decision.buckets.map((b) => b.retryAfterMs)) / 1000));
