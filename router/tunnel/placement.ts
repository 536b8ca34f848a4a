import { AppError } from '../../shared/errors.js';
import type { AgentInfo } from './hub.js';

/** A full cluster frees a slot when some session ends, which nobody can predict: a short hint. */
const FULL_RETRY_AFTER_SEC = 5;

/**
 * Where a new session goes: the agent (of the requested cluster) with the most free room, skipping
 * full ones. An agent's load is what it said in its last health report plus what was placed on it
 * since; an agent that states no capacity (Kubernetes: the scheduler judges room) is never full.
 * Among agents with equal room the least loaded wins — with unbounded agents a bare rotation would
 * depend on the order the agents are listed in, which changes as they report — and equals take turns.
 * Pure bookkeeping, no I/O: the Node hub and the Workers directory both keep one.
 */
export class Placer {
  private readonly loads = new Map<string, { active: number; placed: number }>();
  private turn = 0;

  /** The agent's own count of the sessions it holds (from its health report). */
  reported(agentId: string, active: number): void {
    this.loads.set(agentId, { active, placed: 0 });
  }

  forget(agentId: string): void {
    this.loads.delete(agentId);
  }

  freeRoom(agent: AgentInfo): number {
    if (agent.capacity === undefined) return Number.POSITIVE_INFINITY;
    return agent.capacity - this.loadOf(agent);
  }

  private loadOf(agent: AgentInfo): number {
    const load = this.loads.get(agent.agentId);
    return (load?.active ?? 0) + (load?.placed ?? 0);
  }

  /** Null when no agent (of the cluster) is connected; CAPACITY_EXHAUSTED when every one is full. */
  place(agents: AgentInfo[], cluster?: string): AgentInfo | null {
    const candidates = agents.filter((a) => !cluster || a.cluster === cluster);
    if (candidates.length === 0) return null;
    const rooms = candidates.map((a) => ({ agent: a, room: this.freeRoom(a) }));
    const best = Math.max(...rooms.map((r) => r.room));
    if (best <= 0) {
      throw new AppError('CAPACITY_EXHAUSTED', `every agent${cluster ? ` of cluster "${cluster}"` : ''} runs as many sessions as it can; retry after one ends`, {
        details: { agents: candidates.length, capacity: candidates.reduce((sum, a) => sum + (a.capacity ?? 0), 0) },
        retryAfterSec: FULL_RETRY_AFTER_SEC,
      });
    }
    const roomiest = rooms.filter((r) => r.room === best).map((r) => ({ agent: r.agent, load: this.loadOf(r.agent) }));
    const lightest = Math.min(...roomiest.map((r) => r.load));
    const tied = roomiest.filter((r) => r.load === lightest);
    const pick = tied[this.turn++ % tied.length]!.agent;
    const load = this.loads.get(pick.agentId) ?? { active: 0, placed: 0 };
    this.loads.set(pick.agentId, { ...load, placed: load.placed + 1 });
    return pick;
  }
}
