import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { startAgent, type RunningAgent } from '../../agent/main.js';
import type { SessionView } from '../../shared/api.js';
import { startBalancer, type Balancer } from '../../harness/balancer.js';
import { CHROMIUM, pidsMatching, requireBinary, startRedis, type RedisServer } from '../../harness/processes.js';
import type { Spawned } from '../../harness/spawn.js';
import { bearer, spawnRouter, TEST_KEYS, TEST_METRICS_TOKEN, TEST_TOKEN, waitFor } from '../../harness/system.js';

const MAX_SESSIONS = 2;

type Answer = { status: number; body: any; headers: Headers; at: number };
type Router = { id: string; proc: Spawned; url: string; port: number };

/** The fair queue for slots, on two router replicas sharing one Redis. */
describe('a fair queue for session slots, kept in Redis', () => {
  let redis: RedisServer;
  let balancer: Balancer;
  let agent: RunningAgent;
  let inspect: Redis;
  const routers: Router[] = [];
  /** Sessions holding the slots, with the key that owns each. */
  const held: Array<{ id: string; key: string }> = [];

  beforeAll(async () => {
    requireBinary(CHROMIUM, 'install the Debian package chromium');
    redis = await startRedis();
    inspect = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    balancer = await startBalancer(() => routers.map((r) => ({ host: '127.0.0.1', port: r.port })));
    for (const id of ['queue-a', 'queue-b'])
      routers.push({ id, ...(await spawnRouter(redis.url, { PUBLIC_URL: balancer.url, REPLICA_ID: id, MAX_SESSIONS: String(MAX_SESSIONS), REPLICA_LEASE_SEC: '3' })) });
    agent = await startAgent(
      loadAgentConfig(
        {
          ROUTER_URL: balancer.url,
          AGENT_TOKEN: TEST_TOKEN,
          NODE_NAME: 'queue-node',
          METRICS_PORT: '0',
          METRICS_HOST: '127.0.0.1',
          CHROMIUM_PATH: CHROMIUM,
          LOG_LEVEL: 'warn',
          LOCAL_MAX_BROWSERS: '6',
          WARM_POOL_SIZE: '2',
        },
        process.getuid?.() === 0,
      ),
    );
    await waitFor(() => agent.tunnel.replicas.length === 2, 30_000, 'a tunnel to each replica');
  }, 120_000);
  afterAll(async () => {
    await agent?.close();
    await Promise.all(routers.map((r) => r.proc.stop()));
    await balancer?.close();
    inspect?.disconnect();
    await redis?.stop();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  const post = async (router: Router, query: string, opts: { key?: string; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Answer> => {
    const res = await fetch(`${router.url}/sessions?${query}`, {
      method: 'POST',
      headers: { ...bearer(opts.key ?? TEST_KEYS.user), 'content-type': 'application/json', ...opts.headers },
      body: '{}',
      signal: opts.signal,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers, at: performance.now() };
  };
  const remove = (id: string, key: string = TEST_KEYS.user) => fetch(`${balancer.url}/sessions/${id}`, { method: 'DELETE', headers: bearer(key) });
  /** Fills every slot with a running session (so later creates queue). */
  const fill = async () => {
    while (held.length < MAX_SESSIONS) {
      const a = await post(routers[held.length % 2]!, 'wait=true');
      expect(a.status).toBe(201);
      held.push({ id: (a.body as SessionView).id, key: TEST_KEYS.user });
    }
  };
  const freeOne = async () => {
    const h = held.shift()!;
    expect((await remove(h.id, h.key)).status).toBe(200);
  };
  /** Waiters in the queue, as Redis holds it (every owner's list of tickets). */
  const queued = async (): Promise<number> => {
    let n = 0;
    for (const list of await inspect.keys('*q:o:*')) n += await inspect.llen(list);
    return n;
  };
  /** Starts queued creates one after another, each once the one before is in the queue (arrival order is defined), alternating replicas. */
  const enqueue = async (keys: string[], queueSec = 60) => {
    const answers: Array<Promise<Answer>> = [];
    const before = await queued();
    for (const [i, key] of keys.entries()) {
      answers.push(post(routers[i % 2]!, `queue=${queueSec}`, { key }));
      await waitFor(async () => (await queued()) === before + i + 1, 10_000, `waiter ${i} in the queue`);
    }
    return answers;
  };
  /** Frees one held slot, then waits for exactly one waiter to get it; returns which. */
  const handOff = async (waiting: Array<Promise<Answer>>, done: Set<number>, keys: string[] = []): Promise<number> => {
    await freeOne();
    const winner = await Promise.race(waiting.map((p, i) => (done.has(i) ? new Promise<never>(() => {}) : p.then(() => i))));
    done.add(winner);
    const answer = await waiting[winner]!;
    expect(answer.status, JSON.stringify(answer.body)).toBe(201);
    expect((answer.body as SessionView).status).toBe('running');
    held.push({ id: (answer.body as SessionView).id, key: keys[winner] ?? TEST_KEYS.user });
    return winner;
  };

  it('six queued creates get sessions in arrival order as slots free; past its deadline a waiter gets 429 with Retry-After', async () => {
    await fill();
    const waiting = await enqueue(Array(6).fill(TEST_KEYS.user));
    const late = post(routers[0]!, 'queue=2');
    const done = new Set<number>();
    const order: number[] = [];
    for (let i = 0; i < 6; i++) order.push(await handOff(waiting, done));
    expect(order).toEqual([0, 1, 2, 3, 4, 5]);
    const refused = await late;
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'CAPACITY_EXHAUSTED', details: { queued: true } });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Bad queue input is refused before anything waits.
    for (const [query, headers] of [
      ['queue=0', {}],
      ['queue=soon', {}],
      ['queue=5', { 'idempotency-key': 'not a key!' }],
    ] as const) {
      const bad = await post(routers[0]!, query, { headers });
      expect([bad.status, bad.body.error.code], query).toEqual([400, 'VALIDATION_FAILED']);
    }
    // A create that does not queue is refused at once while all slots are taken.
    expect((await post(routers[1]!, '')).status).toBe(429);
    // Each replica counts the waits it held: together, six served and one timed out; nobody waits now.
    const sum = async (name: string) => {
      let total = 0;
      for (const r of routers) {
        const text = await (await fetch(`${r.url}/metrics`, { headers: bearer(TEST_METRICS_TOKEN) })).text();
        total += Number(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
      }
      return total;
    };
    expect(await sum('router_queue_wait_seconds_count{outcome="served"}')).toBe(6);
    expect(await sum('router_queue_wait_seconds_count{outcome="timed_out"}')).toBe(1);
    expect(await sum('router_queue_waiting')).toBe(0);
  }, 180_000);

  it('keys take turns: a key with three waiters does not hold back another key that came after them', async () => {
    await fill();
    const keys = [TEST_KEYS.user, TEST_KEYS.user, TEST_KEYS.user, TEST_KEYS.other];
    const waiting = await enqueue(keys);
    const done = new Set<number>();
    const order: number[] = [];
    for (let i = 0; i < 4; i++) order.push(await handOff(waiting, done, keys));
    expect(order).toEqual([0, 3, 1, 2]);
  }, 180_000);

  /** A queued create that streams its progress: the lines as they come, and when it ends. */
  const streamed = async (router: Router) => {
    const res = await fetch(`${router.url}/sessions?queue=60`, {
      method: 'POST',
      headers: { ...bearer(TEST_KEYS.user), 'content-type': 'application/json', accept: 'application/x-ndjson' },
      body: '{}',
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/x-ndjson');
    const lines: any[] = [];
    const positions = () => lines.map((l) => ('queue' in l ? l.queue.position : 'session' in l ? 'session' : 'error'));
    const done = (async () => {
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      let buffered = '';
      for (;;) {
        const { done: ended, value } = await reader.read();
        if (ended) return;
        buffered += decoder.decode(value, { stream: true });
        for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
          lines.push(JSON.parse(buffered.slice(0, nl)));
          buffered = buffered.slice(nl + 1);
        }
      }
    })();
    return { lines, positions, done };
  };

  it('progress as it happens (NDJSON): the position counts down to the session', async () => {
    await fill();
    const ahead = await enqueue([TEST_KEYS.user, TEST_KEYS.user]);
    const progress = await streamed(routers[1]!);
    await waitFor(() => progress.lines.length > 0, 10_000, 'a first progress line');
    const done = new Set<number>();
    for (let i = 0; i < 2; i++) await handOff(ahead, done);
    await freeOne();
    await progress.done;
    // Each change a poll saw (two hand-offs between polls show as one step): from 3 down to 1, then the session.
    const seen = progress.positions();
    expect(seen[0]).toBe(3);
    expect(seen.slice(-2)).toEqual([1, 'session']);
    const numbers = seen.slice(0, -1) as number[];
    expect(numbers.every((p, i) => i === 0 || p < numbers[i - 1]!)).toBe(true);
    expect(progress.lines.at(-1).session).toMatchObject({ status: 'running' });
    held.push({ id: progress.lines.at(-1).session.id, key: TEST_KEYS.user });
  }, 180_000);

  it('a waiter whose router is killed asks another replica with its Idempotency-Key and keeps its place; a waiter that disconnects frees its place', async () => {
    await fill();
    const key = { 'idempotency-key': `resume-${Date.now()}` };
    // The first waiter goes through replica A, which dies under it.
    const first = post(routers[0]!, 'queue=60', { headers: key }).catch((err: Error) => ({ status: 0, body: err.message }) as unknown as Answer);
    await waitFor(async () => (await queued()) === 1, 10_000, 'the first waiter in the queue');
    // A second waiter that will leave, and a third that stays, both behind the first.
    const leaving = new AbortController();
    const gone = post(routers[1]!, 'queue=60', { signal: leaving.signal }).catch(() => null);
    await waitFor(async () => (await queued()) === 2, 10_000, 'the second waiter in the queue');
    const third = await streamed(routers[1]!);
    await waitFor(() => third.lines.length > 0, 10_000, "the third waiter's place");
    expect(third.positions()).toEqual([3]);
    const a = routers[0]!;
    a.proc.proc.kill('SIGKILL');
    expect((await first).status).toBe(0);
    // The waiter that disconnects leaves at once, long before a silent one would be dropped.
    leaving.abort();
    await gone;
    await waitFor(() => third.positions().at(-1) === 2, 5000, 'the place the leaving waiter held freed (a silent one would hold it 10 s)');
    // Asked again through the other replica, the same key finds its place at the head.
    const again = post(routers[1]!, 'queue=60', { headers: key });
    // Its ticket is refreshed (not a new one): still two waiters, itself and the third.
    await new Promise((r) => setTimeout(r, 300));
    expect(await queued()).toBe(2);
    await freeOne();
    const resumed = await again;
    expect(resumed.status, JSON.stringify(resumed.body)).toBe(201);
    held.push({ id: (resumed.body as SessionView).id, key: TEST_KEYS.user });
    // The one that left holds nothing: the next slot goes to the third.
    await freeOne();
    await third.done;
    expect(third.positions().slice(-2)).toEqual([1, 'session']);
    held.push({ id: third.lines.at(-1).session.id, key: TEST_KEYS.user });
    // Asked once more, the first key is given the session it already has, not a second one.
    const repeat = await post(routers[1]!, 'queue=60', { headers: key });
    expect(repeat.status).toBe(201);
    expect((repeat.body as SessionView).id).toBe((resumed.body as SessionView).id);
    await Promise.all(held.splice(0).map((h) => remove(h.id, h.key)));
  }, 180_000);
});
