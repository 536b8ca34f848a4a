import { describe, expect, it } from 'vitest';
import { AppError } from '../../shared/errors.js';
import { createLogger } from '../../shared/logger.js';
import type { Session, SessionReport } from '../../shared/session.js';
import type { RpcMethod, RpcParams, RpcResult } from '../../shared/tunnel/protocol.js';
import { SessionService } from '../../router/sessions/service.js';
import { ANONYMOUS } from '../../router/auth/keys.js';
import { MemorySessionStore } from '../../router/store/memory.js';
import type { AgentInfo, BrowserHealth, Placement, TunnelHub } from '../../router/tunnel/hub.js';
import { ManualClock } from '../helpers/clock.js';

const agent: AgentInfo = { agentId: 'node-a/1', cluster: 'local', node: 'node-a', runtime: 'local', connectedAt: 0 };
type Handler<M extends RpcMethod> = (params: RpcParams<M>) => Promise<RpcResult<M>>;

/** A hub whose agent answers with whatever the test decides; every call is recorded. */
class ScriptedHub implements TunnelHub {
  readonly calls: Array<{ method: RpcMethod; params: unknown; to: Placement }> = [];
  connected: AgentInfo[] = [agent];
  start: Handler<'session.start'> = async ({ session }) => report(session.id, 'running');
  stop: Handler<'session.stop'> = async () => ({ stopped: true });

  async agents() {
    return this.connected;
  }
  async place(cluster?: string) {
    return this.connected.find((a) => !cluster || a.cluster === cluster) ?? null;
  }
  call<M extends RpcMethod>(to: Placement, method: M, params: RpcParams<M>): Promise<RpcResult<M>> {
    this.calls.push({ method, params, to });
    if (!this.connected.length) return Promise.reject(new AppError('AGENT_DISCONNECTED', 'gone'));
    const handler = (method === 'session.start' ? this.start : this.stop) as unknown as Handler<M>;
    return handler(params);
  }
  async observe(): Promise<{ connected: boolean; health: BrowserHealth | null }> {
    return { connected: this.connected.length > 0, health: null };
  }
  stops(): string[] {
    return this.calls.filter((c) => c.method === 'session.stop').map((c) => (c.params as { id: string; reason: string }).reason);
  }
}

const report = (id: string, status: SessionReport['status'], extra: Partial<SessionReport> = {}): SessionReport => ({
  id,
  status,
  node: 'node-a',
  at: 0,
  ...(status === 'running' ? { endpoints: { host: '127.0.0.1', apiPort: 9222, browserWsPath: '/devtools/browser/x' } } : {}),
  ...extra,
});

function setup(opts: { maxSessions?: number; proxyCacheTtlMs?: number } = {}) {
  const clock = new ManualClock();
  const store = new MemorySessionStore({ retentionSec: 60, now: () => clock.now() });
  const hub = new ScriptedHub();
  const changes: Array<[string, Session['status'] | null]> = [];
  const service = new SessionService({
    store,
    hub,
    clock,
    logger: createLogger({ level: 'silent' }),
    limits: { maxSessionsPerKey: 0, maxSessions: opts.maxSessions ?? 5, defaultTimeoutSec: 300, defaultIdleTimeoutSec: 60, startTimeoutMs: 10_000, agentLostGraceMs: 30_000 },
    onChange: (s, prev) => changes.push([s.status, prev]),
    proxyCacheTtlMs: opts.proxyCacheTtlMs ?? 0,
  });
  return { clock, store, hub, service, changes };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

/** A promise and the functions that settle it. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe('SessionService', () => {
  it('creates a pending session on the placed agent and records the start outcome from the RPC answer', async () => {
    const { service, hub, changes, clock } = setup();
    const s = await service.create({ timeout: 30 }, ANONYMOUS, null);
    expect(s).toMatchObject({ status: 'pending', cluster: 'local', node: 'node-a', timeout: 30, expiresAt: clock.now() + 30_000, idleTimeout: 60 });
    await settle();
    expect((await service.get(s.id))?.status).toBe('running');
    expect(hub.calls.map((c) => c.method)).toEqual(['session.start']);
    expect(changes).toEqual([
      ['pending', null],
      ['running', 'pending'],
    ]);
  });

  it('with wait, answers once the start finished; past the wait it answers pending and the start goes on', async () => {
    const { service, hub, clock } = setup();
    expect((await service.create({}, ANONYMOUS, { waitMs: 5000 })).status).toBe('running');
    const gate = deferred<SessionReport>();
    hub.start = () => gate.promise;
    const waiting = service.create({}, ANONYMOUS, { waitMs: 5000 });
    await settle();
    clock.advance(5000);
    const s = await waiting;
    expect(s.status).toBe('pending');
    gate.resolve(report(s.id, 'running'));
    await settle();
    expect((await service.get(s.id))?.status).toBe('running');
  });

  it('refuses without an agent (NO_AGENT) and at capacity (CAPACITY_EXHAUSTED, with details)', async () => {
    const { service, hub } = setup({ maxSessions: 1 });
    await expect(service.create({ cluster: 'elsewhere' }, ANONYMOUS, null)).rejects.toMatchObject({ code: 'NO_AGENT', status: 503 });
    await service.create({}, ANONYMOUS, null);
    await expect(service.create({}, ANONYMOUS, null)).rejects.toMatchObject({ code: 'CAPACITY_EXHAUSTED', status: 429, details: { maxSessions: 1, active: 1 } });
    hub.connected = [];
    await expect(service.create({}, ANONYMOUS, null)).rejects.toMatchObject({ code: 'NO_AGENT' });
  });

  it.each([
    ['a timed-out start', new AppError('TIMEOUT', 'session.start got no answer within 10000 ms'), 'the browser did not start within 10 s'],
    ['an agent lost mid-start', new AppError('AGENT_DISCONNECTED', 'session.start failed: agent tunnel closed (1006 )'), 'the agent disconnected while starting the browser'],
    ['an agent error', new AppError('AGENT_ERROR', 'no room'), 'start failed: no room'],
  ])('%s fails the session with a short reason and asks the agent to clean up', async (_name, err, reason) => {
    const { service, hub } = setup();
    hub.start = () => Promise.reject(err);
    const s = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    expect(s).toMatchObject({ status: 'failed', failureReason: reason });
    expect(hub.stops()).toEqual(['orphaned']);
  });

  it("a start that reports failure is recorded as failed, with the agent's reason, and nothing is stopped", async () => {
    const { service, hub } = setup();
    hub.start = async ({ session }) => report(session.id, 'failed', { failureReason: 'browser failed to start: no chromium' });
    const s = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    expect(s).toMatchObject({ status: 'failed', failureReason: 'browser failed to start: no chromium' });
    expect(hub.stops()).toEqual([]);
  });

  it('delete stops the browser, releases the slot and is idempotent', async () => {
    const { service, hub, store } = setup({ maxSessions: 1 });
    const s = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    expect((await service.delete(s.id, ANONYMOUS)).status).toBe('terminated');
    expect((await service.delete(s.id, ANONYMOUS)).status).toBe('terminated');
    expect(hub.stops()).toEqual(['deleted']);
    expect(await store.activeCount()).toBe(0);
    await expect(service.delete('00000000-0000-4000-8000-000000000000', ANONYMOUS)).rejects.toMatchObject({ code: 'SESSION_NOT_FOUND' });
  });

  it('delete while the start is in flight wins: the late running answer does not revive the session', async () => {
    const { service, hub } = setup();
    const gate = deferred<SessionReport>();
    hub.start = () => gate.promise;
    const s = await service.create({}, ANONYMOUS, null);
    expect((await service.delete(s.id, ANONYMOUS)).status).toBe('terminated');
    gate.resolve(report(s.id, 'running'));
    await settle();
    expect((await service.get(s.id))?.status).toBe('terminated');
  });

  it('delete with the agent away still ends the session (the agent stops it when it syncs)', async () => {
    const { service, hub, store } = setup();
    const s = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    hub.connected = [];
    expect((await service.delete(s.id, ANONYMOUS)).status).toBe('terminated');
    expect(await store.activeCount()).toBe(0);
  });

  it('reaper: an expired session times out through the agent; a start lost for good fails; others stay', async () => {
    const { service, hub, clock } = setup();
    const short = await service.create({ timeout: 5 }, ANONYMOUS, { waitMs: 1000 });
    const long = await service.create({ timeout: 600 }, ANONYMOUS, { waitMs: 1000 });
    hub.start = () => new Promise(() => {}); // a router died mid-call: nobody will ever answer
    const lost = await service.create({ timeout: 600 }, ANONYMOUS, null);
    clock.advance(5000);
    expect(await service.reapOnce()).toBe(3); // the 5 s grace past expiry has not passed yet
    clock.advance(5001);
    expect(await service.reapOnce()).toBe(2);
    expect((await service.get(short.id))?.status).toBe('timed_out');
    expect(hub.stops()).toEqual(['timed_out']);
    clock.advance(5000); // createdAt + startTimeoutMs + 5 s grace
    expect(await service.reapOnce()).toBe(1);
    expect(await service.get(lost.id)).toMatchObject({ status: 'failed', failureReason: 'start did not finish in time' });
    expect((await service.get(long.id))?.status).toBe('running');
    expect(await service.reapOnce((x) => x.id !== long.id)).toBe(0);
  });

  it('the reaper loop runs on the clock, never overlaps, and stops', async () => {
    const { service, clock } = setup();
    const s = await service.create({ timeout: 5 }, ANONYMOUS, { waitMs: 1000 });
    const loop = service.startReaper(1000);
    for (let i = 0; i < 12; i++) {
      // One timer at a time: the next pass is scheduled only after this one settled.
      expect(clock.pendingTimers).toBeLessThanOrEqual(1);
      clock.advance(1000);
      for (let k = 0; k < 5; k++) await settle();
    }
    expect((await service.get(s.id))?.status).toBe('timed_out');
    await loop.stop();
    expect(clock.pendingTimers).toBe(0);
  });

  it('takes reports from agents: later changes are applied, unknown sessions are refused', async () => {
    const { service } = setup();
    const handlers = service.agentHandlers(agent);
    const s = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    await expect(handlers['session.report']!(report(s.id, 'failed', { failureReason: 'the browser crashed (exit code 139)' }))).resolves.toEqual({ accepted: true });
    expect(await service.get(s.id)).toMatchObject({ status: 'failed', failureReason: 'the browser crashed (exit code 139)' });
    await expect(handlers['session.report']!(report('00000000-0000-4000-8000-000000000000', 'running'))).resolves.toEqual({ accepted: false });
  });

  it('agent.sync: ended sessions are to stop, sessions the store lost are rebuilt from snapshots', async () => {
    const { service, clock } = setup({ maxSessions: 1 });
    const handlers = service.agentHandlers(agent);
    const ended = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    await service.delete(ended.id, ANONYMOUS);
    const lost: Session = { ...ended, id: '11111111-1111-4111-8111-111111111111', status: 'running', expiresAt: clock.now() + 60_000 };
    const expired: Session = { ...lost, id: '22222222-2222-4222-8222-222222222222', expiresAt: clock.now() - 1 };
    const unknown = '33333333-3333-4333-8333-333333333333';
    const res = await handlers['agent.sync']!({ running: [ended.id, lost.id, expired.id, unknown], snapshots: [lost, expired] });
    expect(res).toEqual({ stop: [ended.id, expired.id, unknown], rebuilt: [lost.id] });
    expect((await service.get(lost.id))?.status).toBe('running');
  });

  it('cluster.sync (the Kubernetes leader): lost nodes and vanished Jobs fail their sessions; the answer names the Jobs to delete', async () => {
    const { service, store, clock } = setup({ maxSessions: 10 });
    const leader: AgentInfo = { agentId: 'node-z/1', cluster: 'local', node: 'node-z', runtime: 'kubernetes', connectedAt: 0 };
    const create = async () => (await service.create({}, ANONYMOUS, { waitMs: 1000 }))!;
    const listed = await create(); // running on node-a, its Job listed: untouched
    const unlistedWithAgent = await create(); // running on node-a, no Job listed, but node-a's agent is here: its own watch decides
    const ended = await create(); // deleted, its Job still there: delete it
    await service.delete(ended.id, ANONYMOUS);
    const running = (await service.get(listed.id))!;
    const onLostNode: Session = { ...running, id: '44444444-4444-4444-8444-444444444444', node: 'node-b' };
    const vanished: Session = { ...running, id: '77777777-7777-4777-8777-777777777777', node: 'node-c' }; // no agent on node-c, no Job: fails
    for (const x of [onLostNode, vanished]) await store.create(x, { maxSessions: 10, maxPerOwner: 0 });
    clock.advance(11_000);
    // Running for a moment only on an agentless node: a list that raced its Job is not trusted.
    const fresh: Session = { ...running, id: '88888888-8888-4888-8888-888888888888', node: 'node-c', startedAt: clock.now(), updatedAt: clock.now() };
    await store.create(fresh, { maxSessions: 10, maxPerOwner: 0 });
    const noRecordGone = '55555555-5555-4555-8555-555555555555'; // no record, node without an agent: delete
    const noRecordHere = '66666666-6666-4666-8666-666666666666'; // no record, its node's agent is connected: its own sync decides
    const jobs = [
      { id: listed.id, node: 'node-a' },
      { id: ended.id, node: 'node-a' },
      { id: onLostNode.id, node: 'node-b' },
      { id: noRecordGone, node: 'node-gone' },
      { id: noRecordHere, node: 'node-a' },
    ];
    const res = await service.agentHandlers(leader)['cluster.sync']!({ jobs, lostNodes: ['node-b'] });
    expect(res.delete.sort()).toEqual([ended.id, onLostNode.id, noRecordGone].sort());
    expect(await service.get(vanished.id)).toMatchObject({ status: 'failed', failureReason: 'its Job vanished' });
    expect(await service.get(onLostNode.id)).toMatchObject({ status: 'failed', failureReason: 'node lost: node "node-b" stopped renewing its lease' });
    expect((await service.get(listed.id))?.status).toBe('running');
    expect((await service.get(unlistedWithAgent.id))?.status).toBe('running');
    expect((await service.get(fresh.id))?.status).toBe('running');
    // Only a Kubernetes agent leads a cluster, and only its own cluster's sessions are judged.
    await expect(service.agentHandlers(agent)['cluster.sync']!({ jobs: [], lostNodes: [] })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await service.agentHandlers({ ...leader, cluster: 'other' })['cluster.sync']!({ jobs: [], lostNodes: ['node-a'] });
    expect((await service.get(listed.id))?.status).toBe('running');
  });

  it('an agent speaks only for its own sessions: another cluster, another node, or a new node for a running session are refused', async () => {
    const { service } = setup();
    const s = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    expect((await service.get(s.id))?.status).toBe('running');
    const rogues: AgentInfo[] = [
      { ...agent, agentId: 'rogue/1', cluster: 'other' },
      { ...agent, agentId: 'node-b/1', node: 'node-b' },
      { ...agent, agentId: 'kube/1', cluster: 'other', runtime: 'kubernetes' },
    ];
    for (const rogue of rogues) {
      const handlers = service.agentHandlers(rogue);
      await expect(handlers['session.report']!(report(s.id, 'failed', { node: rogue.node, failureReason: 'taken' }))).resolves.toEqual({ accepted: false });
      // Its sync neither stops nor rebuilds what is not its own.
      await expect(handlers['agent.sync']!({ running: [s.id], snapshots: [] })).resolves.toEqual({ stop: [], rebuilt: [] });
      expect(await service.reportableBy(rogue, [s.id])).toEqual(new Set());
    }
    // Its own agent cannot move it to another node either (that would take its traffic).
    const own = service.agentHandlers(agent);
    await expect(own['session.report']!(report(s.id, 'running', { node: 'node-b' }))).resolves.toEqual({ accepted: false });
    expect(await service.get(s.id)).toMatchObject({ status: 'running', node: 'node-a' });
    expect(await service.reportableBy(agent, [s.id, '44444444-4444-4444-8444-444444444444'])).toEqual(new Set([s.id]));
  });

  it('agent.sync: a rebuild takes a slot like a create: beyond MAX_SESSIONS the agent is told to stop instead', async () => {
    const { service, clock } = setup({ maxSessions: 2 });
    const handlers = service.agentHandlers(agent);
    const real = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    const fakes: Session[] = Array.from({ length: 5 }, (_, i) => ({
      ...real,
      id: `5555555${i}-5555-4555-8555-555555555555`,
      status: 'running' as const,
      expiresAt: clock.now() + 60_000,
    }));
    const foreign: Session = { ...fakes[0]!, id: '66666666-6666-4666-8666-666666666666', cluster: 'other' };
    const res = await handlers['agent.sync']!({ running: [...fakes.map((f) => f.id), foreign.id], snapshots: [...fakes, foreign] });
    expect(res.rebuilt).toEqual([fakes[0]!.id]);
    expect(res.stop).toEqual([...fakes.slice(1).map((f) => f.id), foreign.id]);
    expect(await service.get(foreign.id)).toBeNull();
    await expect(service.create({}, ANONYMOUS, null)).rejects.toMatchObject({ code: 'CAPACITY_EXHAUSTED' });
  });

  it('a running session no connected agent speaks for fails after the grace period (agent lost), not before; an agent back in time keeps it', async () => {
    const { service, hub, clock } = setup();
    const kept = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    const lost = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    hub.connected = [];
    await service.reapOnce();
    clock.advance(29_000);
    await service.reapOnce();
    expect((await service.get(lost.id))?.status).toBe('running');
    // An agent of another node does not speak for them; the grace goes on.
    hub.connected = [{ ...agent, agentId: 'node-b/1', node: 'node-b' }];
    clock.advance(2000);
    await service.reapOnce();
    expect(await service.get(lost.id)).toMatchObject({ status: 'failed', failureReason: expect.stringMatching(/^agent lost: no agent for node "node-a"/) });
    expect((await service.get(kept.id))?.status).toBe('failed');
    // A session whose agent comes back within the grace stays running, and its clock starts over.
    hub.connected = [agent];
    const back = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    hub.connected = [];
    await service.reapOnce();
    clock.advance(20_000);
    hub.connected = [agent];
    await service.reapOnce();
    hub.connected = [];
    clock.advance(20_000);
    await service.reapOnce();
    expect((await service.get(back.id))?.status).toBe('running');
    clock.advance(30_000);
    await service.reapOnce();
    expect((await service.get(back.id))?.status).toBe('failed');
  });

  it("a session this router never saw an agent speak for (another replica's) is not judged", async () => {
    const { service, store, hub, clock } = setup();
    const own = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    const elsewhere: Session = { ...own, id: '88888888-8888-4888-8888-888888888888', node: 'node-z' };
    await store.create(elsewhere, { maxSessions: 10, maxPerOwner: 0 });
    hub.connected = [];
    await service.reapOnce();
    clock.advance(31_000);
    await service.reapOnce();
    expect((await service.get(own.id))?.status).toBe('failed');
    expect((await service.get(elsewhere.id))?.status).toBe('running');
  });

  it("agent.sync from an agent that restarted: its node's running sessions it does not list fail at once; others are untouched", async () => {
    const { service, clock, store } = setup();
    const gone = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    const listed = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    const otherNode = { ...(await service.create({}, ANONYMOUS, { waitMs: 1000 })), id: '77777777-7777-4777-8777-777777777777', node: 'node-b' };
    await store.create(otherNode, { maxSessions: 10, maxPerOwner: 0 });
    clock.advance(1000);
    const res = await service.agentHandlers(agent)['agent.sync']!({ running: [listed.id], snapshots: [] });
    expect(res).toEqual({ stop: [], rebuilt: [] });
    expect(await service.get(gone.id)).toMatchObject({ status: 'failed', failureReason: 'agent lost: its agent no longer runs it' });
    expect((await service.get(listed.id))?.status).toBe('running');
    expect((await service.get(otherNode.id))?.status).toBe('running');
    // A session that became running as the sync was being handled is not in its list, and stays.
    const fresh = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    await service.agentHandlers(agent)['agent.sync']!({ running: [listed.id], snapshots: [] });
    expect((await service.get(fresh.id))?.status).toBe('running');
    // An agent of another node (any runtime) fails nothing here.
    clock.advance(1000);
    await service.agentHandlers({ ...agent, agentId: 'kube/1', node: 'node-k', runtime: 'kubernetes' })['agent.sync']!({ running: [], snapshots: [] });
    expect((await service.get(listed.id))?.status).toBe('running');
    // The node's own Kubernetes agent, back after a restart, no longer lists a session whose Job vanished: it fails.
    await service.agentHandlers({ ...agent, agentId: 'node-a/kube', runtime: 'kubernetes' })['agent.sync']!({ running: [], snapshots: [] });
    expect(await service.get(listed.id)).toMatchObject({ status: 'failed', failureReason: 'agent lost: its agent no longer runs it' });
  });

  it('serves proxied look-ups from a short cache that status changes refresh', async () => {
    const { service, clock, store } = setup({ proxyCacheTtlMs: 2000 });
    const s = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    expect((await service.forProxy(s.id)).status).toBe('running');
    // A change made behind the service's back (another replica) is seen once the entry expires.
    await store.transition(s.id, { status: 'failed', failureReason: 'elsewhere' }, clock.now());
    expect((await service.forProxy(s.id)).status).toBe('running');
    clock.advance(2001);
    expect((await service.forProxy(s.id)).status).toBe('failed');
    // A change through this service replaces the entry at once.
    const t = await service.create({}, ANONYMOUS, { waitMs: 1000 });
    await service.forProxy(t.id);
    await service.delete(t.id, ANONYMOUS);
    expect((await service.forProxy(t.id)).status).toBe('terminated');
  });

  it('maps a store that fails to STORE_UNAVAILABLE', async () => {
    const { service, store } = setup();
    store.get = () => Promise.reject(new Error('ECONNREFUSED'));
    await expect(service.require('00000000-0000-4000-8000-000000000000', ANONYMOUS)).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', status: 503 });
  });
});
