import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import { pidsMatching } from '../../harness/processes.js';
import { json, startSystem, waitFor, type TestSystem } from '../../harness/system.js';

for (const runtime of ['node', 'edge'] as const) {
  describe(`placement by free capacity: local agents on one machine behave like nodes (${runtime} router)`, () => {
    let sys: TestSystem;
    beforeAll(async () => {
      sys = await startSystem({ runtime, agents: 0, routerEnv: { MAX_SESSIONS: '20' } });
      // Frequent health reports, so a freed browser shows as room quickly.
      await sys.addAgent({ NODE_NAME: 'big', LOCAL_MAX_BROWSERS: '2', HEALTH_INTERVAL_MS: '200' });
      await sys.addAgent({ NODE_NAME: 'small', LOCAL_MAX_BROWSERS: '1', HEALTH_INTERVAL_MS: '200' });
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/health`))).body.agents?.length === 2, 15_000, 'both agents');
    });
    afterAll(async () => {
      await sys?.close();
      expect(await pidsMatching('bso-chromium-')).toEqual([]);
    });
    const create = () => json<SessionView>(sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));

    it('spreads sessions by free room, answers 429 with Retry-After when every agent is full, and uses room freed', async () => {
      const created = [];
      for (let i = 0; i < 3; i++) {
        const { status, body } = await create();
        expect(status).toBe(201);
        expect(body.status).toBe('running');
        created.push(body);
      }
      // The first goes to the agent with more room; in the end each holds what it can.
      expect(created[0]!.node).toBe('big');
      expect(created.filter((s) => s.node === 'big')).toHaveLength(2);
      expect(created.filter((s) => s.node === 'small')).toHaveLength(1);
      const full = await sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(full.status).toBe(429);
      expect(full.headers.get('retry-after')).toBe('5');
      expect(((await full.json()) as { error: { code: string } }).error.code).toBe('CAPACITY_EXHAUSTED');
      // The session on the small agent ends; once its agent reports, the next one goes there.
      const onSmall = created.find((s) => s.node === 'small')!;
      expect((await json<SessionView>(sys.fetch(`${sys.url}/sessions/${onSmall.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
      let next: SessionView | undefined;
      await waitFor(
        async () => {
          const res = await create();
          if (res.status === 201) next = res.body;
          return res.status === 201;
        },
        10_000,
        'room on the small agent',
      );
      expect(next!.node).toBe('small');
      for (const s of [...created, next!]) await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    });
  });
}
