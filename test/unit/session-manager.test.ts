import { describe, expect, it } from 'vitest';
import { createAgentMetrics } from '../../agent/metrics.js';
import type { BrowserExit, BrowserHandle, BrowserRuntime } from '../../agent/runtime/types.js';
import { SessionManager } from '../../agent/sessions.js';
import { createLogger } from '../../shared/logger.js';
import type { Session, SessionReport } from '../../shared/session.js';
import { ManualClock } from '../helpers/clock.js';

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/** A runtime whose browsers start, end and crash when the test says so. */
class ScriptedRuntime implements BrowserRuntime {
  readonly name = 'scripted';
  keepsSessionsOnShutdown = false;
  readonly starts = new Map<string, { gate: ReturnType<typeof deferred<BrowserHandle>>; exit: ReturnType<typeof deferred<BrowserExit>>; signal: AbortSignal }>();
  readonly stopped: string[] = [];
  held: string[] = [];

  start(session: Session, signal: AbortSignal): Promise<BrowserHandle> {
    const gate = deferred<BrowserHandle>();
    const exit = deferred<BrowserExit>();
    this.starts.set(session.id, { gate, exit, signal });
    signal.addEventListener('abort', () => gate.reject(signal.reason));
    return gate.promise;
  }
  adopt(session: Session, signal: AbortSignal): Promise<BrowserHandle> {
    return this.start(session, signal);
  }
  ready(id: string): void {
    const s = this.starts.get(id)!;
    s.gate.resolve({ endpoints: { host: '127.0.0.1', apiPort: 9222, browserWsPath: '/devtools/browser/b' }, exited: s.exit.promise, node: 'pod-node' });
  }
  async stop(id: string): Promise<void> {
    this.stopped.push(id);
  }
  async stopAll(): Promise<void> {}
  present(): string[] {
    return this.held;
  }
}

const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
};

function setup() {
  const clock = new ManualClock();
  const runtime = new ScriptedRuntime();
  const reports: SessionReport[] = [];
  const metrics = createAgentMetrics();
  const manager = new SessionManager({ runtime, clock, logger: createLogger({ level: 'silent' }), metrics, nodeName: 'agent-node', report: (r) => reports.push(r) });
  let n = 0;
  const session = (over: Partial<Session> = {}): Session => ({
    id: `00000000-0000-4000-8000-00000000000${n++}`,
    status: 'pending',
    createdAt: clock.now(),
    updatedAt: clock.now(),
    expiresAt: clock.now() + 60_000,
    timeout: 60,
    idleTimeout: 30,
    options: {},
    cluster: 'local',
    node: 'agent-node',
    ...over,
  });
  const metric = async (name: string) => {
    const text = await metrics.registry.metrics();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  };
  return { clock, runtime, reports, manager, session, metric };
}

describe('SessionManager', () => {
  it('answers a start with its outcome, and reports nothing for it (one channel per change)', async () => {
    const { manager, runtime, reports, session, metric } = setup();
    const s = session();
    const started = manager.start(s);
    expect(manager.start(s)).toBe(started); // a retried start is answered by the first
    runtime.ready(s.id);
    expect(await started).toMatchObject({ id: s.id, status: 'running', node: 'pod-node', endpoints: { apiPort: 9222 } });
    expect(reports).toEqual([]);
    expect(manager.browser(s.id)?.endpoints?.browserWsPath).toBe('/devtools/browser/b');
    expect(await metric('browser_sessions_running')).toBe(1);
    expect(await metric('browser_sessions_total')).toBe(1);
  });

  it('a browser that does not start: failed in the answer, forgotten, counted as failed', async () => {
    const { manager, runtime, reports, session, metric } = setup();
    const s = session();
    const started = manager.start(s);
    runtime.starts.get(s.id)!.gate.reject(new Error('chromium exited before it was ready (code 1)'));
    expect(await started).toMatchObject({ status: 'failed', failureReason: 'browser failed to start: chromium exited before it was ready (code 1)' });
    expect(reports).toEqual([]);
    expect(manager.ids()).toEqual([]);
    expect(await metric('browser_sessions_failed_total')).toBe(1);
  });

  it('a browser closed by its client ends terminated, streams close with 1000, and it is not a failure', async () => {
    const { manager, runtime, reports, session, metric } = setup();
    const s = session();
    const started = manager.start(s);
    runtime.ready(s.id);
    await started;
    const closed: Array<[number, string]> = [];
    manager.trackStream(s.id, (code, reason) => closed.push([code, reason]), true);
    runtime.starts.get(s.id)!.exit.resolve({ clean: true, reason: 'closed by the client' });
    await settle();
    expect(reports).toMatchObject([{ id: s.id, status: 'terminated', failureReason: 'closed by the client' }]);
    expect(closed).toEqual([[1000, '']]);
    expect(runtime.stopped).toEqual([s.id]);
    expect(await metric('browser_sessions_failed_total')).toBe(0);
    expect(manager.ids()).toEqual([]);
  });

  it('a browser that crashes is failed with its reason, and its streams close with 1011', async () => {
    const { manager, runtime, reports, session, metric } = setup();
    const s = session();
    const started = manager.start(s);
    runtime.ready(s.id);
    await started;
    const closed: number[] = [];
    manager.trackStream(s.id, (code) => closed.push(code), true);
    runtime.starts.get(s.id)!.exit.resolve({ clean: false, reason: 'the browser was killed (SIGKILL)' });
    await settle();
    expect(reports).toMatchObject([{ status: 'failed', failureReason: 'the browser was killed (SIGKILL)' }]);
    expect(closed).toEqual([1011]);
    expect(await metric('browser_sessions_failed_total')).toBe(1);
  });

  it('ends a session at its hard deadline and after its idle timeout, with reports and close frames', async () => {
    const { manager, runtime, reports, session, clock } = setup();
    const hard = session({ expiresAt: clock.now() + 10_000 });
    const idle = session({ idleTimeout: 5 });
    for (const s of [hard, idle]) {
      const p = manager.start(s);
      runtime.ready(s.id);
      await p;
    }
    const closed: string[] = [];
    manager.trackStream(hard.id, (_c, reason) => closed.push(reason), true);
    const loop = manager.startIdleLoop(1000);
    const pass = async (ms: number) => {
      for (let t = 0; t < ms; t += 1000) {
        clock.advance(1000);
        await settle();
      }
    };
    await pass(4000);
    manager.touch(hard.id);
    await pass(2000);
    expect(reports.map((r) => [r.id, r.status, r.failureReason])).toEqual([[idle.id, 'timed_out', 'idle timeout']]);
    await pass(4000);
    expect(reports.map((r) => r.status)).toEqual(['timed_out', 'timed_out']);
    expect(closed).toEqual(['session timeout reached']);
    expect(runtime.stopped.sort()).toEqual([hard.id, idle.id].sort());
    await loop.stop();
  });

  it('an open connection keeps a quiet session; the idle timeout counts from the moment the last one closed', async () => {
    const { manager, runtime, reports, session, clock } = setup();
    const s = session({ idleTimeout: 5 });
    const p = manager.start(s);
    runtime.ready(s.id);
    await p;
    const loop = manager.startIdleLoop(1000);
    const pass = async (ms: number) => {
      for (let t = 0; t < ms; t += 1000) {
        clock.advance(1000);
        await settle();
      }
    };
    const untrackWs = manager.trackStream(s.id, () => {}, true);
    const untrackHttp = manager.trackStream(s.id, () => {}, false);
    await pass(20_000); // four idle timeouts with no traffic at all
    expect(reports).toEqual([]);
    untrackWs();
    await pass(10_000);
    expect(reports).toEqual([]); // a request still in flight counts too
    untrackHttp();
    await pass(5000);
    expect(reports).toEqual([]);
    await pass(2000);
    expect(reports).toMatchObject([{ id: s.id, status: 'timed_out', failureReason: 'idle timeout' }]);
    await loop.stop();
  });

  it('release: ends at once with no client connected, else when the last client WebSocket closes; unknown sessions are not found', async () => {
    const { manager, runtime, reports, session } = setup();
    const [idle, used] = [session(), session()];
    for (const s of [idle, used]) {
      const p = manager.start(s);
      runtime.ready(s.id);
      await p;
    }
    expect(await manager.release(idle.id)).toEqual({ found: true, ended: true });
    expect(reports).toMatchObject([{ id: idle.id, status: 'terminated' }]);
    const closeA = manager.trackStream(used.id, () => {}, true);
    const closeB = manager.trackStream(used.id, () => {}, true);
    const closeHttp = manager.trackStream(used.id, () => {}, false);
    expect(await manager.release(used.id)).toEqual({ found: true, ended: false });
    closeA();
    closeHttp(); // a plain request is not a client
    await settle();
    expect(reports).toHaveLength(1);
    closeB();
    await settle();
    expect(reports).toMatchObject([{ id: idle.id }, { id: used.id, status: 'terminated' }]);
    expect(runtime.stopped.sort()).toEqual([idle.id, used.id].sort());
    expect(await manager.release(used.id)).toEqual({ found: false, ended: false });
    expect(await manager.release('00000000-0000-4000-8000-999999999999')).toEqual({ found: false, ended: false });
  });

  it('keepAlive false: the session waits for its first client, then ends when the last one leaves', async () => {
    const { manager, runtime, reports, session } = setup();
    const s = session({ keepAlive: false });
    const p = manager.start(s);
    runtime.ready(s.id);
    await p;
    const probe = manager.trackStream(s.id, () => {}, false); // e.g. /json/version before the WebSocket
    probe();
    await settle();
    expect(reports).toEqual([]);
    const first = manager.trackStream(s.id, () => {}, true);
    const second = manager.trackStream(s.id, () => {}, true);
    first();
    await settle();
    expect(reports).toEqual([]);
    second();
    await settle();
    expect(reports).toMatchObject([{ id: s.id, status: 'terminated' }]);
  });

  it('a stop that races a start wins: the start is aborted and its answer says terminated', async () => {
    const { manager, runtime, reports, session } = setup();
    const s = session();
    const started = manager.start(s);
    const stopping = manager.stop(s.id, 'deleted');
    expect(runtime.starts.get(s.id)!.signal.aborted).toBe(true);
    expect(await stopping).toBe(true);
    expect(await started).toMatchObject({ status: 'terminated' });
    expect(reports.map((r) => r.status)).toEqual(['terminated']);
    expect(runtime.stopped).toEqual([s.id]);
    expect(manager.ids()).toEqual([]);
  });

  it('a browser that came up after its session was stopped is stopped again', async () => {
    const { manager, runtime, session } = setup();
    const s = session();
    const started = manager.start(s);
    // The runtime ignores the abort and finishes anyway.
    runtime.ready(s.id);
    await manager.stop(s.id, 'deleted');
    expect((await started).status).toBe('terminated');
    expect(runtime.stopped.filter((id) => id === s.id).length).toBeGreaterThanOrEqual(1);
    expect(manager.browser(s.id)).toBeNull();
  });

  it('adoption reports its outcome (nobody asked for it) and does not count as a new session', async () => {
    const { manager, runtime, reports, session, metric } = setup();
    const ok = session({ status: 'running' });
    const gone = session({ status: 'running' });
    const a = manager.adopt(ok);
    const b = manager.adopt(gone);
    runtime.ready(ok.id);
    runtime.starts.get(gone.id)!.gate.reject(new Error('pod was deleted'));
    await Promise.all([a, b]);
    expect(reports.map((r) => [r.id, r.status])).toEqual([
      [ok.id, 'running'],
      [gone.id, 'failed'],
    ]);
    expect(await metric('browser_sessions_total')).toBe(0);
    expect(await metric('browser_sessions_running')).toBe(1);
  });

  it('stops what the runtime holds for a session it does not know; says false for one nobody holds', async () => {
    const { manager, runtime } = setup();
    runtime.held = ['11111111-1111-4111-8111-111111111111'];
    expect(manager.ids()).toEqual(runtime.held);
    expect(await manager.stop('11111111-1111-4111-8111-111111111111', 'orphaned')).toBe(true);
    expect(runtime.stopped).toEqual(['11111111-1111-4111-8111-111111111111']);
    expect(await manager.stop('22222222-2222-4222-8222-222222222222', 'orphaned')).toBe(false);
  });

  it('shutdown, browsers that outlive the agent: starts in flight are aborted and awaited, running ones are left', async () => {
    const { manager, runtime, session } = setup();
    runtime.keepsSessionsOnShutdown = true;
    const running = session();
    const p = manager.start(running);
    runtime.ready(running.id);
    await p;
    const starting = session();
    const startingAnswer = manager.start(starting);
    await manager.shutdown();
    expect(runtime.starts.get(starting.id)!.signal.aborted).toBe(true);
    expect((await startingAnswer).status).toBe('failed');
    expect(runtime.stopped).toEqual([]);
    expect(manager.ids()).toEqual([]);
  });

  it('shutdown, local browsers: every session is stopped', async () => {
    const { manager, runtime, session, reports } = setup();
    const s = session();
    const p = manager.start(s);
    runtime.ready(s.id);
    await p;
    await manager.shutdown();
    expect(runtime.stopped).toEqual([s.id]);
    expect(reports.map((r) => [r.status, r.failureReason])).toEqual([['terminated', undefined]]);
  });
});
