import type { Clock } from '../../shared/clock.js';
import { AppError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { TunnelPeer, type RpcHandlers, type TunnelPeerOptions, type TunnelTransport } from '../../shared/tunnel/peer.js';
import { TunnelClose, type RpcMethod, type RpcParams, type RpcResult, type StreamSpec } from '../../shared/tunnel/protocol.js';
import type { TunnelStream } from '../../shared/tunnel/stream.js';
import type { AgentInfo, BrowserHealth, Placement, TunnelHub } from './hub.js';
import { Placer } from './placement.js';

type Connection = { info: AgentInfo; peer: TunnelPeer };

const ANNOUNCE_TIMEOUT_MS = 5000;
/** An agent missing from this replica is usually reconnecting or holds its tunnel elsewhere for a moment. */
const NO_AGENT_RETRY_AFTER_SEC = 2;

export type InProcessHubDeps = {
  clock: Clock;
  logger: Logger;
  /** RPCs an agent may call on the router, bound to that agent. */
  handlersFor: (agent: AgentInfo) => RpcHandlers;
  /** Of the sessions an agent reports health for, those it may speak for (its own). */
  reportableBy: (agent: AgentInfo, ids: string[]) => Promise<Set<string>>;
  onAgentsChanged?: (agents: AgentInfo[]) => void;
  /** An agent's own count of the sessions it holds, from each health report (the Workers directory places by it). */
  onLoad?: (agent: AgentInfo, active: number) => void;
  heartbeatMs?: number;
  /** Every tunnel's RPCs and proxy streams, for the router's metrics. */
  observe?: Pick<TunnelPeerOptions, 'onRpc' | 'onStreamClosed'>;
};

/** Live tunnels held in this process: what the Node router uses. */
export class InProcessHub implements TunnelHub {
  private readonly conns = new Map<string, Connection>();
  private readonly health = new Map<string, BrowserHealth>();
  /** Which sessions each agent reported last, so entries of ended sessions are dropped. */
  private readonly reported = new Map<string, Set<string>>();
  private readonly placer = new Placer();

  constructor(private readonly deps: InProcessHubDeps) {}

  /** Takes over a socket whose hello was already validated. Returns the peer to feed messages to. */
  attach(info: AgentInfo, transport: TunnelTransport): TunnelPeer {
    const previous = this.conns.get(info.agentId);
    if (previous) previous.peer.close(TunnelClose.REPLACED, 'replaced by a newer connection of the same agent');
    const base = this.deps.handlersFor(info);
    const handlers: RpcHandlers = {
      ...base,
      'session.report': async (report) => {
        if (report.active !== undefined) this.loadReported(info, report.active);
        return base['session.report'] ? base['session.report'](report) : { accepted: false };
      },
      'agent.health': async (p) => {
        const own = await this.deps.reportableBy(
          info,
          p.sessions.map((s) => s.id),
        );
        const sessions = p.sessions.filter((s) => own.has(s.id));
        const now = new Set(sessions.map((s) => s.id));
        for (const id of this.reported.get(info.agentId) ?? []) if (!now.has(id)) this.health.delete(id);
        this.reported.set(info.agentId, now);
        for (const s of sessions) this.health.set(s.id, { reachable: s.reachable, checkedAt: p.checkedAt });
        if (p.active !== undefined) this.loadReported(info, p.active);
        return {};
      },
      'agent.load': async ({ active }) => {
        this.loadReported(info, active);
        return {};
      },
    };
    const peer = new TunnelPeer({
      transport,
      clock: this.deps.clock,
      logger: this.deps.logger.child({ agent: info.agentId }),
      handlers,
      heartbeatMs: this.deps.heartbeatMs,
      ...this.deps.observe,
    });
    const conn: Connection = { info, peer };
    this.conns.set(info.agentId, conn);
    peer.onClose((reason) => {
      if (this.conns.get(info.agentId) === conn) {
        this.conns.delete(info.agentId);
        this.placer.forget(info.agentId);
      }
      this.deps.logger.warn('agent disconnected', { agent: info.agentId, cluster: info.cluster, node: info.node, reason });
      this.deps.onAgentsChanged?.(this.agentList());
    });
    this.deps.logger.info('agent connected', { agent: info.agentId, cluster: info.cluster, node: info.node, runtime: info.runtime });
    this.deps.onAgentsChanged?.(this.agentList());
    return peer;
  }

  agents(): Promise<AgentInfo[]> {
    return Promise.resolve(this.agentList());
  }

  agentList(): AgentInfo[] {
    return [...this.conns.values()].map((c) => c.info);
  }

  async place(requestedCluster?: string): Promise<AgentInfo | null> {
    return this.placer.place(
      [...this.conns.values()].filter((c) => !c.peer.isClosed).map((c) => c.info),
      requestedCluster,
    );
  }

  async observe(to: Placement, sessionId: string): Promise<{ connected: boolean; health: BrowserHealth | null }> {
    return { connected: this.find(to) !== undefined, health: this.health.get(sessionId) ?? null };
  }

  async call<M extends RpcMethod>(to: Placement, method: M, params: RpcParams<M>, timeoutMs: number): Promise<RpcResult<M>> {
    const conn = this.find(to);
    if (!conn) throw noAgent(to);
    const result = await conn.peer.call(method, params, timeoutMs);
    // Starts and stops answer with the agent's load after them.
    const active = (result as { active?: unknown }).active;
    if (typeof active === 'number') this.loadReported(conn.info, active);
    return result;
  }

  private loadReported(agent: AgentInfo, active: number): void {
    this.placer.reported(agent.agentId, active);
    this.deps.onLoad?.(agent, active);
  }

  /** A byte stream to the agent serving `to`: what the data plane carries proxied traffic on. */
  openStream(to: Placement, spec: StreamSpec, opts?: { bodyless?: boolean }): TunnelStream {
    const conn = this.find(to);
    if (!conn) throw noAgent(to);
    return conn.peer.openStream(spec, opts);
  }

  /** Proxied streams open on every tunnel: what a draining replica waits on. */
  openStreams(): number {
    let n = 0;
    for (const c of this.conns.values()) n += c.peer.openStreams;
    return n;
  }

  /** Tells every agent which replicas are live, so each holds a tunnel to all of them. An agent too old
   * to know the method answers an error: it keeps its one tunnel, as before. */
  announceReplicas(replicas: string[]): void {
    for (const c of this.conns.values()) {
      if (c.peer.isClosed) continue;
      c.peer.call('router.replicas', { replicas }, ANNOUNCE_TIMEOUT_MS).catch((err) => this.deps.logger.debug('replica announcement not taken', { agent: c.info.agentId, err }));
    }
  }

  closeAll(reason: string): void {
    for (const c of this.conns.values()) c.peer.close(1001, reason);
    this.conns.clear();
  }

  /** The agent on the session's node (the one that owns it); without a node, any agent of the cluster. */
  private find(to: Placement): Connection | undefined {
    for (const c of this.conns.values()) {
      if (c.info.cluster !== to.cluster || c.peer.isClosed) continue;
      if (!to.node || c.info.node === to.node) return c;
    }
    return undefined;
  }
}

function noAgent(to: Placement): AppError {
  return new AppError('AGENT_DISCONNECTED', `no agent of cluster "${to.cluster}"${to.node ? ` on node "${to.node}"` : ''} is connected`, {
    retryAfterSec: NO_AGENT_RETRY_AFTER_SEC,
  });
}
