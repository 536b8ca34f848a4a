import { z } from 'zod';
import { startLoop, type Clock } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';
import { MAX_REPLICAS, REPLICA_ID } from '../../shared/tunnel/protocol.js';
import type { RedisCommands } from '../store/redis-commands.js';

const LiveIds = z.array(z.string().regex(REPLICA_ID));

export type ReplicaRegistryDeps = {
  redis: RedisCommands;
  /** The sorted set every replica of this deployment shares (under REDIS_KEY_PREFIX). */
  key: string;
  id: string;
  leaseMs: number;
  clock: Clock;
  logger: Logger;
  /** The live set changed: agents are told, so they hold one tunnel to each replica. */
  onChange: (replicas: string[]) => void;
};

/**
 * This router replica's lease among its peers (konnectivity's server count, kept in Redis): renewed
 * every third of its length, read back with everyone else's on each renewal. A replica that stops
 * renewing drops out when its lease ends; one that stops cleanly leaves at once.
 */
export class ReplicaRegistry {
  private live: string[];
  private loop: { stop(): Promise<void> } | null = null;

  constructor(private readonly deps: ReplicaRegistryDeps) {
    this.live = [deps.id];
  }

  /** Every live replica this one knows of: itself included (even while Redis is out) until it leaves. */
  get replicas(): string[] {
    return this.live;
  }

  /** Takes the lease (waiting for the first answer, so the first welcome already names the others). */
  async start(): Promise<void> {
    await this.renew().catch((err) => this.deps.logger.warn('replica lease not taken; retrying', { err }));
    this.loop ??= startLoop({
      clock: this.deps.clock,
      intervalMs: Math.max(100, Math.floor(this.deps.leaseMs / 3)),
      tick: () => this.renew(),
      onError: (err) => this.deps.logger.warn('replica lease renewal failed', { err }),
    });
  }

  /** Gives the lease up (a replica that drains), so the others stop counting on it at once; its own
   * agents hear a list without it, which tells them it is leaving. */
  async leave(): Promise<void> {
    await this.loop?.stop();
    this.loop = null;
    await this.deps.redis.script('replicas', [this.deps.key], [this.deps.id, 0, MAX_REPLICAS]).catch((err) => this.deps.logger.warn('replica lease not released', { err }));
    this.update(this.live.filter((id) => id !== this.deps.id));
  }

  private async renew(): Promise<void> {
    const answer = LiveIds.parse(await this.deps.redis.script('replicas', [this.deps.key], [this.deps.id, this.deps.leaseMs, MAX_REPLICAS]));
    this.update(answer.includes(this.deps.id) ? answer : [...answer.slice(0, MAX_REPLICAS - 1), this.deps.id]);
  }

  private update(next: string[]): void {
    const sorted = [...next].sort();
    if (sorted.join('\n') === [...this.live].sort().join('\n')) return;
    const joined = sorted.filter((id) => !this.live.includes(id));
    const left = this.live.filter((id) => !sorted.includes(id));
    this.live = sorted;
    this.deps.logger.info('router replicas changed', { replicas: sorted, joined, left });
    this.deps.onChange(sorted);
  }
}
