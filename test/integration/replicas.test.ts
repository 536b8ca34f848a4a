import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../shared/clock.js';
import { IoredisCommands } from '../../router/store/ioredis-commands.js';
import { ReplicaRegistry } from '../../router/tunnel/replicas.js';
import { startRedis, type RedisServer } from '../../harness/processes.js';
import { quietLogger, waitFor } from '../../harness/system.js';

const KEY = '{bso}:replicas';
const LEASE_MS = 600;

describe('router replica leases in a real redis-server', () => {
  let redis: RedisServer;
  let commands: IoredisCommands;
  const registries: ReplicaRegistry[] = [];
  const announced = new Map<string, string[][]>();

  const replica = (id: string) => {
    const seen: string[][] = [];
    announced.set(id, seen);
    const registry = new ReplicaRegistry({ redis: commands, key: KEY, id, leaseMs: LEASE_MS, clock: systemClock, logger: quietLogger(), onChange: (ids) => seen.push(ids) });
    registries.push(registry);
    return registry;
  };

  beforeAll(async () => {
    redis = await startRedis();
    commands = new IoredisCommands({ url: redis.url });
  });
  afterAll(async () => {
    await Promise.all(registries.map((r) => r.leave()));
    await commands?.close();
    await redis?.stop();
  });

  it('replicas see each other, one that leaves is gone at once, one that stops renewing is gone when its lease ends (on Redis time), and the last one out leaves nothing', async () => {
    const a = replica('router-a');
    const b = replica('router-b');
    expect(a.replicas).toEqual(['router-a']);
    await a.start();
    await b.start();
    // The newcomer sees both at its first renewal; the other at its next one.
    expect(b.replicas).toEqual(['router-a', 'router-b']);
    await waitFor(() => a.replicas.length === 2, 5000, 'router-a to see router-b');
    expect(announced.get('router-a')!.at(-1)).toEqual(['router-a', 'router-b']);

    // A replica that vanished without a word: its lease (300 ms) ends and the others stop naming it.
    await commands.script('replicas', [KEY], ['router-ghost', 300, 32]);
    await waitFor(() => a.replicas.includes('router-ghost'), 5000, 'the ghost to be seen');
    await waitFor(() => !a.replicas.includes('router-ghost') && !b.replicas.includes('router-ghost'), 5000, 'the ghost to drop out');

    // Leaving: its own list no longer names it (its agents read that as "draining"), and the other's soon after.
    await b.leave();
    expect(b.replicas).toEqual(['router-a']);
    expect(announced.get('router-b')!.at(-1)).toEqual(['router-a']);
    await waitFor(() => a.replicas.length === 1, 5000, 'router-a to see router-b leave');
    expect(a.replicas).toEqual(['router-a']);

    // The last one out leaves no member behind (and Redis drops the empty key).
    await a.leave();
    expect(await commands.script('replicas', [KEY], ['probe', 0, 32])).toEqual([]);
  });

  it('keeps naming itself while Redis does not answer', async () => {
    const unreachable = new IoredisCommands({ url: 'redis://127.0.0.1:1' }, { commandTimeoutMs: 200 });
    const lonely = new ReplicaRegistry({
      redis: unreachable,
      key: KEY,
      id: 'router-lonely',
      leaseMs: LEASE_MS,
      clock: systemClock,
      logger: quietLogger(),
      onChange: () => {},
    });
    try {
      await lonely.start();
      expect(lonely.replicas).toEqual(['router-lonely']);
      await lonely.leave();
      expect(lonely.replicas).toEqual([]);
    } finally {
      await unreachable.close();
    }
  });
});
