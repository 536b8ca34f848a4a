import type { Logger } from '../shared/logger.js';
import type { SessionReport } from '../shared/session.js';
import type { TunnelPeer } from '../shared/tunnel/peer.js';

const REPORT_TIMEOUT_MS = 5000;

/**
 * Status reports survive tunnel drops: the latest report per session waits here until the router
 * acknowledges it, and everything pending is replayed after a reconnect.
 */
export class Reporter {
  private readonly pending = new Map<string, SessionReport>();
  private flushing = false;

  constructor(private readonly deps: { peer: () => TunnelPeer | null; logger: Logger }) {}

  report(r: SessionReport): void {
    this.pending.set(r.id, r);
    void this.flush();
  }

  async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.pending.size > 0) {
        const peer = this.deps.peer();
        if (!peer) return;
        const [id, r] = this.pending.entries().next().value as [string, SessionReport];
        try {
          await peer.call('session.report', r, REPORT_TIMEOUT_MS);
          if (this.pending.get(id) === r) this.pending.delete(id);
        } catch (err) {
          this.deps.logger.warn('report not delivered; will retry after reconnect', { session: id, err });
          return;
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}
