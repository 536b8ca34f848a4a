import { describe, expect, it } from 'vitest';
import { AppError } from '../../shared/errors.js';
import type { AgentInfo } from '../../router/tunnel/hub.js';
import { Placer } from '../../router/tunnel/placement.js';

const agent = (node: string, capacity?: number, cluster = 'c1'): AgentInfo => ({
  agentId: `${node}/1`,
  cluster,
  node,
  runtime: 'local',
  connectedAt: 0,
  ...(capacity ? { capacity } : {}),
});

describe('Placer', () => {
  it('puts each session on the agent with the most free room, counting what it placed since the last report', () => {
    const placer = new Placer();
    const [big, small] = [agent('big', 4), agent('small', 2)];
    placer.reported(big.agentId, 1);
    placer.reported(small.agentId, 0);
    // big: 3 free, small: 2 free → big; then 2 and 2 → turns; then 1 and 1 …
    const nodes = Array.from({ length: 5 }, () => placer.place([big, small])!.node);
    expect(nodes.filter((n) => n === 'big')).toHaveLength(3);
    expect(nodes.filter((n) => n === 'small')).toHaveLength(2);
    expect(nodes[0]).toBe('big');
    expect(placer.freeRoom(big)).toBe(0);
    expect(placer.freeRoom(small)).toBe(0);
  });

  it('a full cluster is 429 CAPACITY_EXHAUSTED with a Retry-After; a report that frees room opens it again', () => {
    const placer = new Placer();
    const only = agent('n1', 1);
    expect(placer.place([only])?.node).toBe('n1');
    let refused: unknown;
    try {
      placer.place([only]);
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(AppError);
    expect(refused).toMatchObject({ code: 'CAPACITY_EXHAUSTED', status: 429, retryAfterSec: 5, details: { agents: 1, capacity: 1 } });
    placer.reported(only.agentId, 0);
    expect(placer.place([only])?.node).toBe('n1');
  });

  it('skips a full agent for one with room, ignores other clusters, and answers null with no agent', () => {
    const placer = new Placer();
    const [full, open, elsewhere] = [agent('full', 1), agent('open', 1), agent('away', 10, 'c2')];
    placer.reported(full.agentId, 1);
    expect(placer.place([full, open, elsewhere], 'c1')?.node).toBe('open');
    expect(placer.place([full, open, elsewhere], 'c3')).toBeNull();
    expect(placer.place([], undefined)).toBeNull();
    expect(placer.place([full, open, elsewhere])?.node).toBe('away');
  });

  it('an agent that states no capacity (Kubernetes) is never full; agents alike take turns', () => {
    const placer = new Placer();
    const [a, b] = [agent('a'), agent('b')];
    const nodes = Array.from({ length: 6 }, () => placer.place([a, b])!.node);
    expect(nodes.filter((n) => n === 'a')).toHaveLength(3);
    expect(placer.freeRoom(a)).toBe(Number.POSITIVE_INFINITY);
  });

  it('unbounded agents: the least loaded wins whatever order the agents are listed in, so a burst spreads evenly', () => {
    const placer = new Placer();
    const [a, b, c] = [agent('a'), agent('b'), agent('c')];
    placer.reported(a.agentId, 2);
    const orders = [
      [a, b, c],
      [c, a, b],
      [b, c, a],
      [c, b, a],
    ];
    const nodes = Array.from({ length: 13 }, (_, i) => placer.place(orders[i % orders.length]!)!.node);
    expect(nodes.slice(0, 2).sort()).toEqual(['b', 'c']);
    // a: 2 reported + 3 placed; b and c: 5 placed each.
    expect(nodes.filter((n) => n === 'a')).toHaveLength(3);
    expect(nodes.filter((n) => n === 'b')).toHaveLength(5);
    expect(nodes.filter((n) => n === 'c')).toHaveLength(5);
  });

  it('forgets an agent that left: a new connection of it starts from its own report', () => {
    const placer = new Placer();
    const n = agent('n', 2);
    placer.place([n]);
    placer.place([n]);
    expect(placer.freeRoom(n)).toBe(0);
    placer.forget(n.agentId);
    expect(placer.freeRoom(n)).toBe(2);
  });
});
