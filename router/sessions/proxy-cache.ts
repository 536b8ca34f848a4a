import type { Clock } from '../../shared/clock.js';
import type { Session } from '../../shared/session.js';

/**
 * Running sessions as the proxy last read them, for a short time. Proxied requests are the hot path
 * and a store read per request would dominate it. A stale entry is harmless: the agent only serves
 * sessions it runs, and refuses a stream for one that ended (409), so staleness never reaches a browser.
 */
export class ProxySessionCache {
  private readonly entries = new Map<string, { session: Session; until: number }>();

  constructor(private readonly deps: { clock: Clock; ttlMs: number; maxEntries: number }) {}

  get(id: string): Session | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    if (e.until <= this.deps.clock.now()) {
      this.entries.delete(id);
      return undefined;
    }
    return e.session;
  }

  put(session: Session): void {
    if (session.status !== 'running') return this.forget(session.id);
    if (this.entries.size >= this.deps.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(session.id, { session, until: this.deps.clock.now() + this.deps.ttlMs });
  }

  forget(id: string): void {
    this.entries.delete(id);
  }
}
