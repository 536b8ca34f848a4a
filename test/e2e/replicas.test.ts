import { chromium, type Browser } from 'playwright-core';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { startAgent, type RunningAgent } from '../../agent/main.js';
import type { SessionView } from '../../shared/api.js';
import { requestOnce, startBalancer, type Balancer } from '../../harness/balancer.js';
import { CHROMIUM, pidsMatching, requireBinary, startRedis, type RedisServer } from '../../harness/processes.js';
import type { Spawned } from '../../harness/spawn.js';
import { bearer, spawnRouter, TEST_KEYS, TEST_TOKEN, waitFor } from '../../harness/system.js';
import { openTestPage, PAGES_ORIGIN } from '../helpers/pages.js';

const LEASE_SEC = 3;
const DRAIN_SEC = 4;
const CAPACITY = 3;
const key = bearer(TEST_KEYS.user);

type Replica = { id: string; proc: Spawned; url: string; port: number; alive: boolean };

/** The same session URL, through one replica instead of the balancer. */
const via = (url: string, replica: Replica) => {
  const u = new URL(url);
  u.port = String(replica.port);
  return u.toString();
};

/** Runs `Runtime.evaluate`-style calls back to back until stopped, counting answers and failures. */
function keepBusy(work: () => Promise<unknown>) {
  const state = { ok: 0, failed: 0, stopped: false, lastError: '' };
  const done = (async () => {
    while (!state.stopped) {
      try {
        await work();
        state.ok++;
      } catch (err) {
        state.failed++;
        state.lastError = (err as Error).message;
        return;
      }
    }
  })();
  return { state, stop: async () => ((state.stopped = true), await done) };
}

describe('three router replicas on one Redis behind a round-robin balancer, every agent tunnelled to each', () => {
  let redis: RedisServer;
  let balancer: Balancer;
  const replicas: Replica[] = [];
  const agents: RunningAgent[] = [];
  const browsers: Browser[] = [];
  const sessions: SessionView[] = [];

  const startReplica = async (id: string): Promise<Replica> => {
    const started = await spawnRouter(redis.url, { PUBLIC_URL: balancer.url, REPLICA_ID: id, REPLICA_LEASE_SEC: String(LEASE_SEC), DRAIN_TIMEOUT_SEC: String(DRAIN_SEC) });
    const replica: Replica = { id, ...started, alive: true };
    replicas.push(replica);
    return replica;
  };
  const liveIds = () =>
    replicas
      .filter((r) => r.alive)
      .map((r) => r.id)
      .sort();
  const sameSet = (a: string[], b: string[]) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
  /** Every agent holds one tunnel per live replica and knows no other. */
  const converged = () =>
    waitFor(
      () => agents.every((a) => sameSet(a.tunnel.replicas, liveIds()) && sameSet(a.tunnel.knownReplicas, liveIds())),
      (LEASE_SEC + 20) * 1000,
      'every agent to hold a tunnel to each live replica',
    );
  const statusOf = async (id: string, replica?: Replica) => (await requestOnce(`${replica?.url ?? balancer.url}/sessions/${id}`, { headers: key })).body as SessionView;

  beforeAll(async () => {
    requireBinary(CHROMIUM, 'install the Debian package chromium');
    redis = await startRedis();
    // Every replica is a backend, dead or alive: the balancer skips one that refuses, as a cloud one would.
    balancer = await startBalancer(() => replicas.map((r) => ({ host: '127.0.0.1', port: r.port })));
    for (const id of ['replica-a', 'replica-b', 'replica-c']) await startReplica(id);
    for (let i = 0; i < 3; i++) {
      agents.push(
        await startAgent(
          loadAgentConfig(
            {
              ROUTER_URL: balancer.url,
              AGENT_TOKEN: TEST_TOKEN,
              NODE_NAME: `node-${i}`,
              METRICS_PORT: '0',
              METRICS_HOST: '127.0.0.1',
              CHROMIUM_PATH: CHROMIUM,
              LOCAL_MAX_BROWSERS: String(CAPACITY),
              LOG_LEVEL: 'silent',
            },
            process.getuid?.() === 0,
          ),
        ),
      );
    }
  }, 90_000);

  afterAll(async () => {
    await Promise.all(browsers.map((b) => b.close().catch(() => {})));
    await Promise.all(agents.map((a) => a.close()));
    await Promise.all(replicas.map((r) => r.proc.stop()));
    await balancer?.close();
    await redis?.stop();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  it('agents hold a tunnel to every replica; creates through the balancer spread by free room; Playwright drives each session through whichever replica the balancer picks; every replica answers for every session', async () => {
    await converged();
    for (const r of replicas) {
      const health = await requestOnce(`${r.url}/health`, { headers: key });
      expect(health.status).toBe(200);
      expect((health.body.agents as Array<{ node: string }>).map((a) => a.node).sort()).toEqual(['node-0', 'node-1', 'node-2']);
    }

    // One connection per request, so consecutive creates land on consecutive replicas.
    for (let i = 0; i < 6; i++) {
      const created = await requestOnce(`${balancer.url}/sessions?wait=true`, { method: 'POST', headers: { ...key, 'content-type': 'application/json' }, body: '{}' });
      expect(created.status).toBe(201);
      expect(created.body.status).toBe('running');
      sessions.push(created.body as SessionView);
    }
    // Each replica learns every agent's load as it changes, so the most-free-room rule spreads them evenly.
    const perNode = new Map<string, number>();
    for (const s of sessions) perNode.set(s.node!, (perNode.get(s.node!) ?? 0) + 1);
    expect(Object.fromEntries(perNode)).toEqual({ 'node-0': 2, 'node-1': 2, 'node-2': 2 });
    for (const s of sessions) expect(new URL(s.cdpUrl).port).toBe(String(balancer.port));

    for (const s of sessions) {
      const { browser, page } = await openTestPage(s.cdpUrl);
      browsers.push(browser);
      expect(await page.evaluate('window.answer')).toBe(42);
    }
    for (const r of replicas) {
      for (const s of sessions) {
        const status = await requestOnce(`${r.url}/sessions/${s.id}/status`, { headers: key });
        expect(status.body).toMatchObject({ status: 'running', health: { agentConnected: true } });
        const version = await requestOnce(`${via(s.proxyUrl, r)}/json/version`, { headers: key });
        expect(version.status).toBe(200);
      }
    }
    expect(balancer.served.filter((n) => n > 0)).toHaveLength(3);
  });

  it('a replica killed during CDP traffic: clients through the others are unaffected, its own reconnect at once, no session is lost, agents drop its tunnel', async () => {
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    const clients = await Promise.all(
      [a, b, c].map(async (replica, i) => {
        const browser = await chromium.connectOverCDP(via(sessions[i]!.cdpUrl, replica));
        browsers.push(browser);
        const page = browser.contexts()[0]!.pages()[0]!;
        return { browser, page, busy: keepBusy(() => page.evaluate('1 + 1')) };
      }),
    );
    await waitFor(() => clients.every((cl) => cl.busy.state.ok > 5), 20_000, 'traffic on every client');
    const killedAt = clients.map((cl) => cl.busy.state.ok);

    a.proc.proc.kill('SIGKILL');
    a.alive = false;
    await waitFor(() => !clients[0]!.browser.isConnected(), 10_000, "the killed replica's client to see its connection end");
    // The others go on: more answers after the kill, not one failure.
    await waitFor(
      () => clients[1]!.busy.state.ok > killedAt[1]! + 20 && clients[2]!.busy.state.ok > killedAt[2]! + 20,
      20_000,
      `traffic through the other replicas (${JSON.stringify(clients.map((cl) => cl.busy.state))})`,
    ).catch((err) => {
      throw new Error(`${(err as Error).message}: now ${JSON.stringify(clients.map((cl) => cl.busy.state))}`);
    });
    for (const cl of clients.slice(1)) expect(cl.busy.state).toMatchObject({ failed: 0 });
    await Promise.all(clients.map((cl) => cl.busy.stop()));

    // Its client reconnects through the balancer at once (the balancer skips the dead backend).
    const again = await chromium.connectOverCDP(sessions[0]!.cdpUrl);
    browsers.push(again);
    // The page the first test opened is still there (the order of a browser's pages is not fixed).
    const testPage = again
      .contexts()[0]!
      .pages()
      .find((p) => p.url().startsWith(PAGES_ORIGIN));
    expect(await testPage?.evaluate('window.answer')).toBe(42);

    for (const s of sessions) expect((await statusOf(s.id)).status).toBe('running');
    // Its tunnels went with it; once its lease ran out the others stopped naming it and agents stopped dialling for it.
    await converged();
  });

  it('a replica that stops drains: readiness fails, new connections get 503 with Retry-After, open CDP connections finish or close with 1001, agents move on (a rolling update)', async () => {
    const fresh = await startReplica('replica-d');
    await converged();
    const leaving = replicas.find((r) => r.id === 'replica-b')!;
    const s = sessions[1]!;

    const ws = new WebSocket(via(s.cdpUrl, leaving));
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    let nextId = 1;
    const call = (method: string) =>
      new Promise<any>((resolve, reject) => {
        const id = nextId++;
        const onMessage = (data: WebSocket.RawData) => {
          const msg = JSON.parse(data.toString());
          if (msg.id !== id) return;
          ws.off('message', onMessage);
          resolve(msg);
        };
        ws.on('message', onMessage);
        ws.send(JSON.stringify({ id, method }), (err) => err && reject(err));
      });
    expect((await call('Browser.getVersion')).result.product).toMatch(/Chrome/);

    const stoppedAt = Date.now();
    const exited = new Promise<number | null>((resolve) => leaving.proc.proc.once('exit', resolve));
    leaving.proc.proc.kill('SIGTERM');
    leaving.alive = false;
    await waitFor(async () => (await requestOnce(`${leaving.url}/readyz`)).status === 503, 5000, 'readiness to fail');
    expect((await requestOnce(`${leaving.url}/readyz`)).body).toEqual({ status: 'draining' });
    const refused = await requestOnce(`${via(s.proxyUrl, leaving)}/json/version`, { headers: key });
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe('ROUTER_DRAINING');
    expect(refused.headers['retry-after']).toBe('1');
    // The open connection still works while the replica drains.
    expect((await call('Browser.getVersion')).result.product).toMatch(/Chrome/);

    const { code, reason } = await closed;
    expect({ code, reason }).toEqual({ code: 1001, reason: 'router shutting down' });
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(DRAIN_SEC * 1000 - 500);
    expect(await exited).toBe(0);

    await converged();
    expect(liveIds()).toEqual(['replica-c', fresh.id]);
    for (const x of sessions) expect((await statusOf(x.id, fresh)).status).toBe('running');
    const created = await requestOnce(`${balancer.url}/sessions?wait=true`, { method: 'POST', headers: { ...key, 'content-type': 'application/json' }, body: '{}' });
    expect(created.status).toBe(201);
    const version = await requestOnce(`${created.body.proxyUrl}/json/version`, { headers: key });
    expect(version.status).toBe(200);
  });
});
