import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import { pidsMatching } from '../../harness/processes.js';
import { bearer, json, keyedFetch, startSystem, TEST_KEYS, TEST_TOKEN, waitFor, type TestSystem } from '../../harness/system.js';

/** Every rejection has the one error shape, a 4xx/503 status and never a 500. */
function expectError(res: { status: number; body: any }, status: number, code: string) {
  expect(res.status).toBe(status);
  expect(res.body).toMatchObject({ error: { code, message: expect.any(String) } });
  expect(Object.keys(res.body)).toEqual(['error']);
}

const post = (url: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  json(keyedFetch(TEST_KEYS.user)(url, { method: 'POST', headers, body }));

const EAST_TOKEN = 'east-cluster-token-0123456789';

for (const runtime of ['node', 'edge'] as const)
  describe(`bad input (${runtime} router)`, () => {
    let sys: TestSystem;
    beforeAll(async () => {
      sys = await startSystem({ runtime, routerEnv: { MAX_SESSIONS: '1', MAX_BODY_BYTES: '2048', AGENT_TOKENS: `east:${EAST_TOKEN}` } });
    });
    afterAll(async () => {
      await sys?.close();
      expect(await pidsMatching('bso-chromium-')).toEqual([]);
    });

    it('malformed JSON → 400 INVALID_JSON', async () => {
      expectError(await post(`${sys.url}/sessions`, '{"timeout": 30,'), 400, 'INVALID_JSON');
    });

    it('wrong types → 400 VALIDATION_FAILED naming the field', async () => {
      const res = await post(`${sys.url}/sessions`, JSON.stringify({ timeout: 'soon' }));
      expectError(res, 400, 'VALIDATION_FAILED');
      expect(res.body.error.message).toContain('timeout');
      expect(res.body.error.details.issues[0].path).toBe('timeout');
      expectError(await post(`${sys.url}/sessions`, JSON.stringify({ timeout: 1 })), 400, 'VALIDATION_FAILED');
      expectError(await post(`${sys.url}/sessions`, JSON.stringify({ options: { viewport: { width: 'wide' } } })), 400, 'VALIDATION_FAILED');
      expectError(await post(`${sys.url}/sessions`, '[1,2]'), 400, 'VALIDATION_FAILED');
      expectError(await json(sys.fetch(`${sys.url}/sessions?status=sleeping`)), 400, 'VALIDATION_FAILED');
      expectError(await json(sys.fetch(`${sys.url}/sessions?limit=0`)), 400, 'VALIDATION_FAILED');
      for (const cursor of ['%ZZ', 'abc', '000000000000001:x', `${'9'.repeat(15)}:${'a'.repeat(80)}`]) {
        expectError(await json(sys.fetch(`${sys.url}/sessions?cursor=${cursor}`)), 400, 'VALIDATION_FAILED');
      }
      expectError(await post(`${sys.url}/sessions?wait=maybe`, '{}'), 400, 'VALIDATION_FAILED');
    });

    it('unknown fields → 400 VALIDATION_FAILED', async () => {
      const res = await post(`${sys.url}/sessions`, JSON.stringify({ timeout: 30, flags: ['--remote-debugging-address=0.0.0.0'] }));
      expectError(res, 400, 'VALIDATION_FAILED');
      expect(JSON.stringify(res.body.error.details)).toContain('flags');
    });

    it('free-form options: a bad name, JSON nested too deep, a bad time zone or too much of it → 400 VALIDATION_FAILED naming the option', async () => {
      const deep = JSON.parse('['.repeat(10) + ']'.repeat(10));
      for (const [options, path] of [
        [{ 'bad name!': 1 }, 'options.bad name!'],
        [{ deep }, 'options.deep'],
        [{ timezone: 'Mars/Olympus_Mons' }, 'options.timezone'],
        [{ locale: 'not a locale' }, 'options.locale'],
      ] as const) {
        const res = await post(`${sys.url}/sessions`, JSON.stringify({ options }));
        expectError(res, 400, 'VALIDATION_FAILED');
        expect(res.body.error.details.issues.map((i: { path: string }) => i.path)).toContain(path);
      }
    });

    it('oversized body → 413 PAYLOAD_TOO_LARGE', async () => {
      const big = JSON.stringify({ options: { userAgent: 'x'.repeat(5000) } });
      expectError(await post(`${sys.url}/sessions`, big), 413, 'PAYLOAD_TOO_LARGE');
      // Chunked bodies without a length are cut off too.
      const chunked = new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode(big));
          c.close();
        },
      });
      const res = await sys.fetch(`${sys.url}/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chunked, duplex: 'half' } as RequestInit);
      expectError({ status: res.status, body: await res.json() }, 413, 'PAYLOAD_TOO_LARGE');
    });

    it('unknown session id → 404 SESSION_NOT_FOUND on every route; a malformed id → 400', async () => {
      const id = '00000000-0000-4000-8000-000000000000';
      expectError(await json(sys.fetch(`${sys.url}/sessions/${id}`)), 404, 'SESSION_NOT_FOUND');
      expectError(await json(sys.fetch(`${sys.url}/sessions/${id}/status`)), 404, 'SESSION_NOT_FOUND');
      expectError(await json(sys.fetch(`${sys.url}/sessions/${id}`, { method: 'DELETE' })), 404, 'SESSION_NOT_FOUND');
      expectError(await json(sys.fetch(`${sys.url}/sessions/${id}/proxy/json/version`)), 404, 'SESSION_NOT_FOUND');
      expectError(await json(sys.fetch(`${sys.url}/sessions/NOT_AN_ID/status`)), 400, 'VALIDATION_FAILED');
      expectError(await json(sys.fetch(`${sys.url}/nothing-here`)), 404, 'NOT_FOUND');
    });

    it('a WebSocket to an unknown or ended session is refused with an HTTP error and JSON body', async () => {
      const status = await new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`${sys.url.replace('http', 'ws')}/sessions/00000000-0000-4000-8000-000000000000/proxy/devtools/browser`, { headers: bearer(TEST_KEYS.user) });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => reject(new Error('should not open')));
        ws.on('error', () => {});
      });
      expect(status).toBe(404);
    });

    it('capacity reached → 429 CAPACITY_EXHAUSTED; proxy to a session that is not running → 409', async () => {
      const first = (await post(`${sys.url}/sessions?wait=true`, '{}')) as { status: number; body: SessionView };
      expect(first.status).toBe(201);
      const second = await post(`${sys.url}/sessions`, '{}');
      expectError(second, 429, 'CAPACITY_EXHAUSTED');
      expect(second.body.error.details).toMatchObject({ maxSessions: 1, active: 1 });
      await sys.fetch(`${sys.url}/sessions/${first.body.id}`, { method: 'DELETE' });
      expectError(await json(fetch(`${first.body.proxyUrl}/json/version`)), 409, 'SESSION_NOT_RUNNING');
      // The slot is free again.
      const third = (await post(`${sys.url}/sessions?wait=true`, '{}')) as { status: number; body: SessionView };
      expect(third.status).toBe(201);
      await sys.fetch(`${sys.url}/sessions/${third.body.id}`, { method: 'DELETE' });
    });

    it('a wrong agent token → 401, and the agent is not registered', async () => {
      const status = await new Promise<number>((resolve) => {
        const ws = new WebSocket(`${sys.url.replace('http', 'ws')}/agent/connect`, { headers: { authorization: 'Bearer wrong-token-wrong-token' } });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('error', () => {});
      });
      expect(status).toBe(401);
      const noToken = await new Promise<number>((resolve) => {
        const ws = new WebSocket(`${sys.url.replace('http', 'ws')}/agent/connect`);
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('error', () => {});
      });
      expect(noToken).toBe(401);
      const bad = await sys.addAgent({ AGENT_TOKEN: 'not-the-token-at-all', NODE_NAME: 'intruder' });
      await new Promise((r) => setTimeout(r, 300));
      const health = await json(sys.fetch(`${sys.url}/health`));
      expect(health.body.agents.map((a: { node: string }) => a.node)).not.toContain('intruder');
      await bad.close();
      sys.agents.splice(sys.agents.indexOf(bad), 1);
    });

    it('a token bound to a cluster opens that cluster only, and a cluster with its own token takes no other', async () => {
      const outcome = (cluster: string, token: string) =>
        new Promise<number | 'open'>((resolve) => {
          const ws = new WebSocket(`${sys.url.replace('http', 'ws')}/agent/connect?cluster=${cluster}`, { headers: { authorization: `Bearer ${token}` } });
          ws.on('open', () => {
            resolve('open');
            ws.close();
          });
          ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
          ws.on('error', () => {});
        });
      expect(await outcome('east', EAST_TOKEN)).toBe('open');
      expect(await outcome('local', EAST_TOKEN)).toBe(401);
      expect(await outcome('east', TEST_TOKEN)).toBe(401);
    });

    if (runtime === 'node')
      it('a 40 MB hello ends the tunnel at the message cap (1009) before it is read whole', async () => {
        const [code] = await new Promise<[number, string]>((resolve) => {
          const ws = new WebSocket(`${sys.url.replace('http', 'ws')}/agent/connect?cluster=local`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
          ws.on('open', () => ws.send(JSON.stringify({ t: 'hello', v: 1, clusterId: 'local', nodeName: 'x'.repeat(40 * 1024 * 1024), agentId: 'a', runtime: 'local' })));
          ws.on('close', (c, reason) => resolve([c, reason.toString()]));
          ws.on('error', () => {});
        });
        expect(code).toBe(1009);
      });

    it('a socket that authenticates but speaks garbage, or says nothing, is dropped (4002); a connect without a cluster is 400', async () => {
      const closeOf = (send?: string) =>
        new Promise<[number, string]>((resolve) => {
          const ws = new WebSocket(`${sys.url.replace('http', 'ws')}/agent/connect?cluster=local`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
          ws.on('open', () => send !== undefined && ws.send(send));
          ws.on('close', (c, reason) => resolve([c, reason.toString()]));
          ws.on('error', () => {});
        });
      expect(await closeOf('{"t":"hello","v":1}')).toEqual([4002, 'expected hello']);
      // The hello deadline is 5 s on both runtimes (on Workers, the hub's alarm enforces it).
      expect(await closeOf()).toEqual([4002, 'no hello']);
      const status = await new Promise<number>((resolve) => {
        const ws = new WebSocket(`${sys.url.replace('http', 'ws')}/agent/connect`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('error', () => {});
      });
      expect(status).toBe(400);
    });

    it('no agent connected → 503 NO_AGENT, and an unknown cluster likewise', async () => {
      expectError(await post(`${sys.url}/sessions`, JSON.stringify({ cluster: 'elsewhere' })), 503, 'NO_AGENT');
      const agent = sys.agents.pop()!;
      await agent.close();
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/health`))).body.agents.length === 0, 5000, 'agent gone');
      expectError(await post(`${sys.url}/sessions`, '{}'), 503, 'NO_AGENT');
      await sys.addAgent();
      await waitFor(async () => (await json(sys.fetch(`${sys.url}/health`))).body.agents.length === 1, 5000, 'agent back');
    });
  });
