import { describe, expect, it } from 'vitest';
import { Reporter } from '../../agent/reporter.js';
import { InProcessHub } from '../../router/tunnel/in-process-hub.js';
import type { AgentInfo } from '../../router/tunnel/hub.js';
import { AppError } from '../../shared/errors.js';
import { createLogger } from '../../shared/logger.js';
import type { SessionReport } from '../../shared/session.js';
import { TunnelPeer, type RpcHandlers } from '../../shared/tunnel/peer.js';
import { TunnelClose } from '../../shared/tunnel/protocol.js';
import { ManualClock } from '../helpers/clock.js';

const logger = createLogger({ level: 'silent' });
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
};
const report = (id: string, status: SessionReport['status']): SessionReport => ({ id, status, node: 'n', at: 0 });

/** A peer that records report calls and fails them while `failing` is set. */
function recordingPeer() {
  const delivered: SessionReport[] = [];
  const state = { failing: false, inFlight: 0, maxInFlight: 0 };
  const peer = {
    call: async (_method: string, params: SessionReport) => {
      state.inFlight++;
      state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
      await new Promise((r) => setTimeout(r, 0));
      state.inFlight--;
      if (state.failing) throw new AppError('AGENT_DISCONNECTED', 'tunnel closed');
      delivered.push(params);
      return { accepted: true };
    },
  } as unknown as TunnelPeer;
  return { peer, delivered, state };
}

describe('Reporter', () => {
  it('keeps reports while no tunnel is up and delivers the latest per session, one call at a time, after reconnect', async () => {
    let current: TunnelPeer | null = null;
    const reporter = new Reporter({ peer: () => current, logger });
    reporter.report(report('a', 'running'));
    reporter.report(report('b', 'running'));
    reporter.report(report('a', 'failed'));
    await settle();
    const { peer, delivered, state } = recordingPeer();
    current = peer;
    await reporter.flush();
    expect(delivered.map((r) => [r.id, r.status])).toEqual([
      ['a', 'failed'],
      ['b', 'running'],
    ]);
    expect(state.maxInFlight).toBe(1);
  });

  it('a failed delivery stays queued for the next flush', async () => {
    const { peer, delivered, state } = recordingPeer();
    const reporter = new Reporter({ peer: () => peer, logger });
    state.failing = true;
    reporter.report(report('a', 'terminated'));
    await settle();
    expect(delivered).toEqual([]);
    state.failing = false;
    await reporter.flush();
    expect(delivered.map((r) => r.status)).toEqual(['terminated']);
    await reporter.flush();
    expect(delivered).toHaveLength(1);
  });
});

/** An agent's end of a tunnel, joined to the hub's end in memory. */
function connect(hub: InProcessHub, clock: ManualClock, info: AgentInfo, handlers: RpcHandlers = {}) {
  const closes: number[] = [];
  const link: { hub?: TunnelPeer } = {};
  const agentSide = new TunnelPeer({
    transport: { send: (d) => queueMicrotask(() => link.hub!.receive(d)), close: () => link.hub!.handleTransportClosed('AGENT_DISCONNECTED', 'agent closed') },
    clock,
    logger,
    handlers,
    heartbeatMs: 0,
  });
  const hubSide = hub.attach(info, {
    send: (d) => queueMicrotask(() => agentSide.receive(d)),
    close: (code) => {
      closes.push(code);
      agentSide.handleTransportClosed('AGENT_DISCONNECTED', 'router closed');
    },
  });
  link.hub = hubSide;
  return { agentSide, hubSide, closes };
}

describe('InProcessHub', () => {
  const info = (agentId: string, cluster: string, node: string, runtime = 'kubernetes'): AgentInfo => ({ agentId, cluster, node, runtime, connectedAt: 0 });

  function setup() {
    const clock = new ManualClock();
    const changes: number[] = [];
    const hub = new InProcessHub({
      clock,
      logger,
      handlersFor: () => ({}),
      reportableBy: async (_a, ids) => new Set(ids),
      onAgentsChanged: (a) => changes.push(a.length),
      heartbeatMs: 0,
    });
    return { clock, hub, changes };
  }

  it('places new sessions round-robin within the requested cluster, and on no agent answers null', async () => {
    const { hub, clock } = setup();
    connect(hub, clock, info('a1', 'east', 'n1'));
    connect(hub, clock, info('a2', 'east', 'n2'));
    connect(hub, clock, info('b1', 'west', 'n3'));
    const picks = [];
    for (let i = 0; i < 4; i++) picks.push((await hub.place('east'))?.agentId);
    expect(new Set(picks)).toEqual(new Set(['a1', 'a2']));
    expect((await hub.place('west'))?.agentId).toBe('b1');
    expect(await hub.place('north')).toBeNull();
  });

  it("calls the agent on the session's node, and no other: every agent owns its node, whatever its runtime", async () => {
    const { hub, clock } = setup();
    const served: string[] = [];
    const stopOn = (name: string): RpcHandlers => ({ 'session.stop': async () => (served.push(name), { stopped: true, active: 3 }) });
    connect(hub, clock, info('a1', 'east', 'n1'), stopOn('a1'));
    connect(hub, clock, info('a2', 'east', 'n2'), stopOn('a2'));
    await hub.call({ cluster: 'east', node: 'n2' }, 'session.stop', { id: 'x', reason: 'deleted' }, 1000);
    expect(served).toEqual(['a2']);
    await expect(hub.call({ cluster: 'east', node: 'gone' }, 'session.stop', { id: 'x', reason: 'deleted' }, 1000)).rejects.toMatchObject({
      code: 'AGENT_DISCONNECTED',
      status: 503,
    });
    const local = setup();
    connect(local.hub, local.clock, info('l1', 'dev', 'n1', 'local'));
    await expect(local.hub.call({ cluster: 'dev', node: 'other' }, 'session.stop', { id: 'x', reason: 'deleted' }, 1000)).rejects.toMatchObject({
      code: 'AGENT_DISCONNECTED',
      status: 503,
    });
  });

  it('places by the load agents state: a start or stop answer and a health report all update it', async () => {
    const { hub, clock } = setup();
    let active = 1;
    connect(hub, clock, { ...info('a1', 'east', 'n1', 'local'), capacity: 1 }, { 'session.stop': async () => ({ stopped: true, active: (active = 0) }) });
    expect((await hub.place('east'))?.agentId).toBe('a1');
    await expect(hub.place('east')).rejects.toMatchObject({ code: 'CAPACITY_EXHAUSTED', status: 429 });
    // The stop's answer says the agent holds nothing now: room again, at once.
    await hub.call({ cluster: 'east', node: 'n1' }, 'session.stop', { id: 'x', reason: 'deleted' }, 1000);
    expect(active).toBe(0);
    expect((await hub.place('east'))?.agentId).toBe('a1');
    await expect(hub.place('east')).rejects.toMatchObject({ code: 'CAPACITY_EXHAUSTED' });
  });

  it('a newer connection of the same agent replaces the old one (4001); a closed one leaves the hub', async () => {
    const { hub, clock, changes } = setup();
    const first = connect(hub, clock, info('a1', 'east', 'n1'));
    const second = connect(hub, clock, info('a1', 'east', 'n1'));
    expect(first.closes).toEqual([TunnelClose.REPLACED]);
    expect((await hub.agents()).length).toBe(1);
    second.agentSide.close(1001, 'agent shutting down');
    expect(await hub.agents()).toEqual([]);
    expect(changes.at(-1)).toBe(0);
    await expect(hub.call({ cluster: 'east' }, 'session.stop', { id: 'x', reason: 'deleted' }, 1000)).rejects.toMatchObject({ code: 'AGENT_DISCONNECTED' });
  });

  it('keeps the last health report per session, and forgets sessions an agent stopped reporting', async () => {
    const { hub, clock } = setup();
    const { agentSide } = connect(hub, clock, info('a1', 'east', 'n1'));
    await agentSide.call(
      'agent.health',
      {
        checkedAt: 5,
        sessions: [
          { id: 's1', reachable: true },
          { id: 's2', reachable: false },
        ],
      },
      1000,
    );
    expect(await hub.observe({ cluster: 'east', node: 'n1' }, 's2')).toEqual({ connected: true, health: { reachable: false, checkedAt: 5 } });
    await agentSide.call('agent.health', { checkedAt: 9, sessions: [{ id: 's1', reachable: true }] }, 1000);
    expect(await hub.observe({ cluster: 'east', node: 'n1' }, 's2')).toEqual({ connected: true, health: null });
    expect(await hub.observe({ cluster: 'west' }, 's1')).toEqual({ connected: false, health: { reachable: true, checkedAt: 9 } });
  });
});
