import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, pidsMatching, requireBinary, startRedis, type RedisServer } from '../../harness/processes.js';
import { spawnEntry, type Spawned } from '../../harness/spawn.js';
import { json, TEST_TOKEN, waitFor } from '../../harness/system.js';

describe('MAX_SESSIONS across two router processes sharing one Redis', () => {
  let redis: RedisServer;
  const procs: Spawned[] = [];
  const routers: string[] = [];

  beforeAll(async () => {
    requireBinary(CHROMIUM, 'install the Debian package chromium');
    redis = await startRedis();
    for (let i = 0; i < 2; i++) {
      const router = spawnEntry('router/node.ts', {
        PORT: '0',
        HOST: '127.0.0.1',
        REDIS_URL: redis.url,
        MAX_SESSIONS: '3',
        AGENT_TOKEN: TEST_TOKEN,
        LOG_LEVEL: 'info',
      });
      procs.push(router);
      const url = JSON.parse(await router.waitForLine(/router listening/)).url as string;
      routers.push(url);
      const agent = spawnEntry('agent/main.ts', {
        ROUTER_URL: url,
        AGENT_TOKEN: TEST_TOKEN,
        NODE_NAME: `node-${i}`,
        METRICS_PORT: '0',
        CHROMIUM_PATH: CHROMIUM,
        LOG_LEVEL: 'info',
      });
      procs.push(agent);
      await agent.waitForLine(/tunnel connected/);
    }
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await redis?.stop();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  it('twenty concurrent creates give exactly three sessions and seventeen capacity errors', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => json(fetch(`${routers[i % 2]}/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }))),
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
      const list = await json(fetch(`${url}/sessions`));
      expect(list.body.items.map((s: { id: string }) => s.id).sort()).toEqual(created.map((r) => r.body.id).sort());
    }
    for (const r of created) {
      await waitFor(async () => (await json(fetch(`${routers[0]}/sessions/${r.body.id}/status`))).body.status === 'running', 20_000, 'running');
    }
    // An agent tunnels to one router process, so each session is deleted through the router its agent uses.
    for (const r of created) {
      const owner = routers[results.indexOf(r) % 2]!;
      const del = await json(fetch(`${owner}/sessions/${r.body.id}`, { method: 'DELETE' }));
      expect(del.body.status).toBe('terminated');
    }
    await waitFor(async () => (await pidsMatching('bso-chromium-')).length === 0, 10_000, 'browsers gone');
    const again = await json(fetch(`${routers[1]}/sessions`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } }));
    expect(again.status).toBe(201);
    await json(fetch(`${routers[1]}/sessions/${again.body.id}`, { method: 'DELETE' }));
  });
});
