import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, pidsMatching, requireBinary, startRedis, type RedisServer } from '../../harness/processes.js';
import type { Spawned } from '../../harness/spawn.js';
import { json, keyedFetch, spawnReplicas, TEST_KEYS, waitFor } from '../../harness/system.js';

const userFetch = keyedFetch(TEST_KEYS.user);

describe('MAX_SESSIONS across two router processes sharing one Redis', () => {
  let redis: RedisServer;
  const procs: Spawned[] = [];
  const routers: string[] = [];

  beforeAll(async () => {
    requireBinary(CHROMIUM, 'install the Debian package chromium');
    redis = await startRedis();
    const replicas = await spawnReplicas({ redisUrl: redis.url, count: 2, routerEnv: { MAX_SESSIONS: '3' } });
    procs.push(...replicas.procs);
    routers.push(...replicas.urls);
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await redis?.stop();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  it('twenty concurrent creates give exactly three sessions and seventeen capacity errors', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => json(userFetch(`${routers[i % 2]}/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }))),
    );
    const created = results.filter((r) => r.status === 201);
    const refused = results.filter((r) => r.status !== 201);
    expect(created).toHaveLength(3);
    expect(refused).toHaveLength(17);
    for (const r of refused) {
      expect(r.status).toBe(429);
      expect(r.body.error.code).toBe('CAPACITY_EXHAUSTED');
    }
    // Both routers see all three: state lives in Redis, not in a replica.
    for (const url of routers) {
      const list = await json(userFetch(`${url}/sessions`));
      expect(list.body.items.map((s: { id: string }) => s.id).sort()).toEqual(created.map((r) => r.body.id).sort());
    }
    for (const r of created) {
      await waitFor(async () => (await json(userFetch(`${routers[0]}/sessions/${r.body.id}/status`))).body.status === 'running', 20_000, 'running');
    }
    // An agent tunnels to one router process, so each session is deleted through the router its agent uses.
    for (const r of created) {
      const owner = routers[results.indexOf(r) % 2]!;
      const del = await json(userFetch(`${owner}/sessions/${r.body.id}`, { method: 'DELETE' }));
      expect(del.body.status).toBe('terminated');
    }
    await waitFor(async () => (await pidsMatching('bso-chromium-')).length === 0, 10_000, 'browsers gone');
    const again = await json(userFetch(`${routers[1]}/sessions`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } }));
    expect(again.status).toBe(201);
    await json(userFetch(`${routers[1]}/sessions/${again.body.id}`, { method: 'DELETE' }));
  });
});
