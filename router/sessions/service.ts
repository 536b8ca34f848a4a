import type { CreateSessionBody } from '../../shared/api.js';
import { sleep, startLoop, withDeadline, type Clock } from '../../shared/clock.js';
import { AppError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { isTerminal, type Session, type SessionReport } from '../../shared/session.js';
import { traceIdOf } from '../../shared/trace.js';
import type { RpcHandlers } from '../../shared/tunnel/peer.js';
import type { RpcParams, RpcResult } from '../../shared/tunnel/protocol.js';
import type { AgentInfo, TunnelHub } from '../tunnel/hub.js';
import { ProxySessionCache } from './proxy-cache.js';
import { ownerOf, type ListPage, type ListQuery, type SessionChange, type SessionStore } from '../store/types.js';
import type { Caller } from '../auth/keys.js';

/** Seconds a client waits before asking again when no agent could take its session. */
const NO_AGENT_RETRY_AFTER_SEC = 5;

export type SessionServiceDeps = {
  store: SessionStore;
  hub: TunnelHub;
  clock: Clock;
  logger: Logger;
  /** `maxSessionsPerKey`: active sessions one API key may hold (0: no quota). */
  limits: { maxSessions: number; maxSessionsPerKey: number; defaultTimeoutSec: number; defaultIdleTimeoutSec: number; startTimeoutMs: number; agentLostGraceMs: number };
  onChange?: (session: Session, previous: Session['status'] | null) => void;
  queueMetrics?: Partial<QueueMetrics>;
  /** How long a proxied request may use a session read earlier; 0 reads the store every time (the
   * Workers router, where status changes land in another isolate and could not invalidate it). */
  proxyCacheTtlMs: number;
};

/** Keeps work alive past the response where the runtime needs telling (Workers' waitUntil). */
export type Background = (work: Promise<unknown>) => void;

/** Where clients reach the router, and a session on its own host when it serves the session's browser API there. */
export type SessionReach = { publicUrl: string; sessionUrlOf?: (id: string) => string };
/** What a create carries besides its body: `reach` for images that hand out URLs; the client's `traceparent`. */
export type CreateContext = { reach?: SessionReach; traceparent?: string; /** The queue ticket this create is for (its waiter is at the head). */ ticket?: string };

/** A queued create: how long it may wait for a slot, its ticket, and who hears its position. */
export type QueueWait = {
  waitMs: number;
  ticket: string;
  /** The ticket comes from the client (its Idempotency-Key): it may already wait, or have been served. */
  resumable: boolean;
  signal?: AbortSignal;
  onPosition?: (position: number) => void;
};

/** What the queue reports: waiters this replica holds, and each wait's length by how it ended. */
export type QueueMetrics = {
  queueWaiting(delta: number): void;
  observeQueueWait(seconds: number, outcome: 'served' | 'timed_out' | 'left' | 'failed'): void;
};

/** The head waiter looks for a free slot this often; the others only refresh their place and position. */
const QUEUE_HEAD_POLL_MS = 20;
const QUEUE_POLL_MS = 250;

const STOP_TIMEOUT_MS = 15_000;
/** A session running at least this long whose Job the cluster leader does not list has lost it (a Job
 * created just before the leader's list would otherwise be missed by a list that raced it). */
const JOB_VANISHED_AFTER_MS = 10_000;
/** A slot frees when some session ends, which nobody can predict; a short hint keeps clients polite. */
const SLOT_RETRY_AFTER_SEC = 5;

/** Whether `caller` may see and manage `s`: its owner, or an admin. Anyone else is told it does not exist. */
export const visibleTo = (s: Session, caller: Caller): boolean => caller.role === 'admin' || ownerOf(s) === caller.keyId;

/** Session lifecycle as the router sees it: what was asked (store) and what agents report. */
export class SessionService {
  private readonly proxyCache: ProxySessionCache | null;
  /**
   * Sessions this process has seen an agent speak for (it started them, or one was connected here),
   * and those of them no connected agent speaks for now, since when. Only what this process saw is
   * judged: another replica's agents are not connected here, and their sessions are not lost.
   */
  private readonly ownedHere = new Set<string>();
  private readonly unownedSince = new Map<string, number>();

  constructor(private readonly deps: SessionServiceDeps) {
    this.proxyCache = deps.proxyCacheTtlMs > 0 ? new ProxySessionCache({ clock: deps.clock, ttlMs: deps.proxyCacheTtlMs, maxEntries: 10_000 }) : null;
  }

  /** The session for a proxied request, whoever owns it (the proxy checks access itself); served from a
   * short-lived cache while it is running. */
  async forProxy(id: string): Promise<Session> {
    const cached = this.proxyCache?.get(id);
    if (cached) return cached;
    const s = await this.get(id);
    if (!s) throw new AppError('SESSION_NOT_FOUND', `no session with id ${id}`);
    this.proxyCache?.put(s);
    return s;
  }

  /** `context.reach`: where clients reach the router (and the session on its own host), for images that hand out URLs of their own. */
  async create(body: CreateSessionBody, caller: Caller, wait: { waitMs: number } | null, background?: Background, context: CreateContext = {}): Promise<Session> {
    const { store, hub, clock, limits } = this.deps;
    const logger = context.traceparent ? this.deps.logger.child({ traceId: traceIdOf(context.traceparent) }) : this.deps.logger;
    const agent = await hub.place(body.cluster);
    if (!agent) {
      // An agent may be on its way (a restart, or tunnels to every replica still forming).
      throw new AppError('NO_AGENT', body.cluster ? `no agent of cluster "${body.cluster}" is connected` : 'no agent is connected', { retryAfterSec: NO_AGENT_RETRY_AFTER_SEC });
    }
    const now = clock.now();
    const timeout = body.timeout ?? limits.defaultTimeoutSec;
    const session: Session = {
      id: crypto.randomUUID(),
      status: 'pending',
      createdAt: now,
      updatedAt: now,
      expiresAt: now + timeout * 1000,
      timeout,
      idleTimeout: body.idleTimeout ?? limits.defaultIdleTimeoutSec,
      options: body.options ?? {},
      cluster: agent.cluster,
      node: agent.node,
      owner: caller.keyId,
      ...(body.keepAlive === false ? { keepAlive: false } : {}),
    };
    const res = await this.storeCall(() => store.create(session, { maxSessions: limits.maxSessions, maxPerOwner: limits.maxSessionsPerKey, ticket: context.ticket, now }));
    if (!res.ok) {
      if (res.reason === 'capacity' && res.active < limits.maxSessions) {
        throw new AppError('CAPACITY_EXHAUSTED', 'creates are waiting in the queue for the free slots; join it with ?queue=<seconds>', {
          details: { maxSessions: limits.maxSessions, active: res.active, queued: true },
          retryAfterSec: SLOT_RETRY_AFTER_SEC,
        });
      }
      if (res.reason === 'capacity' || res.reason === 'not_head') {
        throw new AppError('CAPACITY_EXHAUSTED', `all ${limits.maxSessions} session slots are in use; retry after a session ends`, {
          details: { maxSessions: limits.maxSessions, ...(res.reason === 'capacity' ? { active: res.active } : { position: res.position }) },
          retryAfterSec: SLOT_RETRY_AFTER_SEC,
        });
      }
      if (res.reason === 'quota') {
        throw new AppError('QUOTA_EXCEEDED', `this key already holds ${res.active} of its ${limits.maxSessionsPerKey} sessions; end one first`, {
          details: { maxSessionsPerKey: limits.maxSessionsPerKey, active: res.active },
          retryAfterSec: SLOT_RETRY_AFTER_SEC,
        });
      }
      throw new AppError('INTERNAL', 'session id collision');
    }
    logger.info('session created', { session: session.id, cluster: session.cluster, node: session.node, timeout, idleTimeout: session.idleTimeout });
    this.deps.onChange?.(session, null);
    const started = this.start(session, context, logger);
    background?.(started);
    if (!wait) return session;
    // Past the wait the client gets the session as it is then (still pending); the start goes on.
    const outcome = await withDeadline(clock, started, wait.waitMs, { error: () => new Error('wait over') }).catch(() => null);
    return outcome ?? (await this.get(session.id)) ?? session;
  }

  /**
   * A create that waits in the fair queue for a slot when every one is taken, up to `queue.waitMs`:
   * FIFO per key, keys taking turns (the store keeps the queue, so every replica serves it and it
   * outlives a router). The head waiter takes the first slot that frees; the others keep their place
   * by polling. A ticket asked about again (the same Idempotency-Key after a router died) keeps its
   * place, or gets the session it was already given. Past the deadline, or when the caller goes, the
   * ticket leaves the queue.
   */
  async createQueued(
    body: CreateSessionBody,
    caller: Caller,
    queue: QueueWait,
    wait: { waitMs: number } | null,
    background?: Background,
    context: CreateContext = {},
  ): Promise<Session> {
    const { store, clock, limits } = this.deps;
    const begun = clock.now();
    const deadline = begun + queue.waitMs;
    const ttlSec = Math.ceil(queue.waitMs / 1000) + 60;
    const owner = caller.keyId;
    let position = 0;
    const metrics = this.deps.queueMetrics;
    const waited = (outcome: 'served' | 'timed_out' | 'left' | 'failed') => metrics?.observeQueueWait?.((clock.now() - begun) / 1000, outcome);
    const known = queue.resumable ? await this.storeCall(() => store.queueTicket(queue.ticket, null, begun, ttlSec)) : ({ state: 'gone' } as const);
    if (known.state === 'served') return this.settled(known.sessionId, wait);
    if (known.state === 'gone') {
      // Nobody waits ahead (or this is not a create asked again): a slot may be free right now.
      try {
        return await this.create(body, caller, wait, background, context);
      } catch (err) {
        if (!(err instanceof AppError && err.code === 'CAPACITY_EXHAUSTED')) throw err;
      }
    }
    metrics?.queueWaiting?.(1);
    try {
      for (;;) {
        if (queue.signal?.aborted) throw queue.signal.reason ?? new Error('the client left');
        const state = await this.storeCall(() => store.queueTicket(queue.ticket, owner, clock.now(), ttlSec));
        if (state.state === 'served') {
          waited('served');
          return await this.settled(state.sessionId, wait);
        }
        if (state.state === 'waiting') {
          if (state.position !== position) queue.onPosition?.(state.position);
          position = state.position;
        }
        // The head tries only when the store has room: a refused try would still count against the agent it placed on.
        if (position === 1 && (await this.storeCall(() => store.activeCount())) < limits.maxSessions) {
          try {
            const session = await this.create(body, caller, wait, background, { ...context, ticket: queue.ticket });
            waited('served');
            return session;
          } catch (err) {
            if (!(err instanceof AppError && err.code === 'CAPACITY_EXHAUSTED')) throw err;
          }
        }
        if (clock.now() >= deadline) {
          waited('timed_out');
          throw new AppError('CAPACITY_EXHAUSTED', `no session slot freed within the ${Math.round(queue.waitMs / 1000)} s this create could wait in the queue`, {
            details: { maxSessions: limits.maxSessions, queued: true, position, waitedMs: clock.now() - begun },
            retryAfterSec: SLOT_RETRY_AFTER_SEC,
          });
        }
        await sleep(clock, Math.min(position === 1 ? QUEUE_HEAD_POLL_MS : QUEUE_POLL_MS, Math.max(1, deadline - clock.now())), queue.signal);
      }
    } catch (err) {
      if (queue.signal?.aborted) waited('left');
      else if (!(err instanceof AppError && err.code === 'CAPACITY_EXHAUSTED')) waited('failed');
      // Whatever ended the wait, the ticket stops holding a place (a served one stays served).
      await store.leaveQueue(queue.ticket).catch(() => {});
      throw err;
    } finally {
      metrics?.queueWaiting?.(-1);
    }
  }

  /** A session handed to a queue ticket, once its start settled (for `wait`). */
  private async settled(id: string, wait: { waitMs: number } | null): Promise<Session> {
    const { clock } = this.deps;
    const until = clock.now() + (wait?.waitMs ?? 0);
    for (;;) {
      const s = await this.get(id);
      if (!s) throw new AppError('SESSION_NOT_FOUND', `no session with id ${id}`);
      if (s.status !== 'pending' || clock.now() >= until) return s;
      await sleep(clock, QUEUE_POLL_MS);
    }
  }

  async get(id: string): Promise<Session | null> {
    return this.storeCall(() => this.deps.store.get(id));
  }

  /** The session if `caller` may see it; another key's session is as unknown as a missing one (no oracle). */
  async require(id: string, caller: Caller): Promise<Session> {
    const s = await this.get(id);
    if (!s || !visibleTo(s, caller)) throw new AppError('SESSION_NOT_FOUND', `no session with id ${id}`);
    return s;
  }

  /** The caller's own sessions; an admin's list has everyone's. */
  list(q: Omit<ListQuery, 'owner'>, caller: Caller): Promise<ListPage> {
    return this.storeCall(() => this.deps.store.list({ ...q, owner: caller.role === 'admin' ? undefined : caller.keyId }));
  }

  /** Idempotent: deleting an ended session returns it as it is. */
  async delete(id: string, caller: Caller): Promise<Session> {
    const s = await this.require(id, caller);
    if (isTerminal(s.status)) return s;
    return this.stop(s, 'terminated', 'deleted');
  }

  /**
   * The client is done with the session: it ends now when no client is connected to it, else when the
   * last one disconnects. Idempotent; an ended session is returned as it is.
   */
  async release(id: string, caller: Caller): Promise<Session> {
    const s = await this.require(id, caller);
    if (isTerminal(s.status)) return s;
    const { found, ended } = await this.deps.hub.call({ cluster: s.cluster, node: s.node }, 'session.release', { id }, STOP_TIMEOUT_MS);
    if (!found) throw new AppError('SESSION_NOT_RUNNING', `session ${id} is not running on its agent`);
    if (!ended) return s;
    return (await this.transition(id, { status: 'terminated' })) ?? s;
  }

  /**
   * Whether `agent` may speak for `s`: an agent of its cluster (tokens are bound to clusters), on its
   * node. Every agent owns its node: a local one its browsers, a Kubernetes one the pods pinned there.
   */
  static speaksFor(agent: AgentInfo, s: Pick<Session, 'cluster' | 'node'>): boolean {
    return s.cluster === agent.cluster && s.node === agent.node;
  }

  /** Of `ids`, the sessions `agent` may report health for. */
  async reportableBy(agent: AgentInfo, ids: string[]): Promise<Set<string>> {
    const sessions = await Promise.all(ids.map((id) => this.get(id).catch(() => null)));
    return new Set(sessions.filter((s): s is Session => s !== null && SessionService.speaksFor(agent, s)).map((s) => s.id));
  }

  /** RPCs agents call on the router. */
  agentHandlers(agent: AgentInfo): RpcHandlers {
    return {
      'session.report': async (report) => ({ accepted: (await this.applyReport(report, agent)) !== null }),
      'agent.sync': async ({ running, snapshots }) => {
        const stop: string[] = [];
        const rebuilt: string[] = [];
        const refused: string[] = [];
        const now = this.deps.clock.now();
        // One read of every active session; only ids not among them (ended, or unknown) are read one by one.
        const active = await this.deps.store.listActive();
        const activeById = new Map(active.map((s) => [s.id, s]));
        for (const id of running) {
          const s = activeById.get(id) ?? (await this.get(id));
          // Another agent's session is none of this agent's business: neither stopped nor rebuilt.
          if (s && !SessionService.speaksFor(agent, s)) continue;
          if (s && !isTerminal(s.status)) continue;
          const snapshot = snapshots.find((x) => x.id === id);
          // The cluster says it runs; the store has no record at all: the store lost it, so rebuild it,
          // but only as this agent's own, and only into a free slot.
          const rebuildable = !s && snapshot && snapshot.status === 'running' && snapshot.expiresAt > now && SessionService.speaksFor(agent, snapshot);
          if (rebuildable && (await this.rebuild(snapshot))) rebuilt.push(id);
          else {
            if (rebuildable) refused.push(id);
            stop.push(id);
          }
        }
        const lost = await this.lostOnRestart(agent, active, running, now);
        if (lost.length) this.deps.logger.warn('the agent does not run sessions it was running: failed', { agent: agent.agentId, sessions: lost });
        if (rebuilt.length) this.deps.logger.warn('rebuilt sessions the store had lost, from the agent', { agent: agent.agentId, sessions: rebuilt });
        if (refused.length) this.deps.logger.warn('no free slot to rebuild sessions the agent reported; asking it to stop them', { agent: agent.agentId, sessions: refused });
        if (stop.length) this.deps.logger.warn('agent runs sessions that ended; asking it to stop them', { agent: agent.agentId, sessions: stop });
        return { stop, rebuilt };
      },
      'cluster.sync': (p) => this.clusterSync(agent, p),
    };
  }

  /**
   * The cluster leader's view of every Job of its cluster (see agent/runtime/kubernetes/janitor.ts).
   * Sessions on a node that stopped renewing its Lease fail ("node lost"); a session running for a
   * while on a node with no agent, whose Job is gone, fails ("its Job vanished"); the leader is told to delete the Jobs of ended
   * sessions, of lost nodes, and Jobs with no session record at all unless their node's agent is
   * here to rebuild them from its sync (a store that lost its data).
   */
  private async clusterSync(agent: AgentInfo, p: RpcParams<'cluster.sync'>): Promise<RpcResult<'cluster.sync'>> {
    if (agent.runtime !== 'kubernetes') throw new AppError('BAD_REQUEST', 'only a Kubernetes agent leads a cluster');
    const now = this.deps.clock.now();
    const lostNodes = new Set(p.lostNodes);
    const jobIds = new Set(p.jobs.map((j) => j.id));
    const active = (await this.storeCall(() => this.deps.store.listActive())).filter((s) => s.cluster === agent.cluster);
    const connected = await this.deps.hub.agents();
    // A node's own agent watches its pods and reports a vanished one itself: the leader judges only
    // nodes without one (where, with no agent to start anything, its list cannot race a new Job).
    const agentOn = (node: string | undefined) => connected.some((a) => SessionService.speaksFor(a, { cluster: agent.cluster, node }));
    const failed = new Map<string, string>();
    for (const s of active) {
      if (s.node && lostNodes.has(s.node)) failed.set(s.id, `node lost: node "${s.node}" stopped renewing its lease`);
      else if (s.status === 'running' && !jobIds.has(s.id) && !agentOn(s.node) && (s.startedAt ?? s.updatedAt) < now - JOB_VANISHED_AFTER_MS) failed.set(s.id, 'its Job vanished');
    }
    for (const [id, failureReason] of failed) await this.transition(id, { status: 'failed', failureReason });
    if (failed.size) this.deps.logger.warn('cluster leader: sessions failed', { cluster: agent.cluster, sessions: Object.fromEntries(failed) });
    const stillActive = new Set(active.filter((s) => !failed.has(s.id)).map((s) => s.id));
    const toDelete: string[] = [];
    for (const job of p.jobs) {
      if (lostNodes.has(job.node)) toDelete.push(job.id);
      else if (stillActive.has(job.id)) continue;
      else if (await this.get(job.id)) toDelete.push(job.id);
      else if (!agentOn(job.node)) toDelete.push(job.id);
    }
    return { delete: toDelete };
  }

  /**
   * An agent is the only one that runs its node's sessions (a local one's browsers die with it; a
   * Kubernetes one adopts its node's Jobs when it comes back): a running session of its node that its
   * sync does not list is gone (its browser ended with the agent, or its Job vanished meanwhile). Only
   * sessions that were running before this sync arrived count: a start that finishes meanwhile is
   * answered after the sync was sent, so it cannot be in the list yet.
   */
  private async lostOnRestart(agent: AgentInfo, active: Session[], running: string[], receivedAt: number): Promise<string[]> {
    const listed = new Set(running);
    const lost = active.filter((s) => s.status === 'running' && SessionService.speaksFor(agent, s) && !listed.has(s.id) && (s.startedAt ?? s.updatedAt) < receivedAt);
    for (const s of lost) await this.transition(s.id, { status: 'failed', failureReason: 'agent lost: its agent no longer runs it' });
    return lost.map((s) => s.id);
  }

  /** Puts back a running session the store lost, taking a slot atomically like a create: refused at MAX_SESSIONS. */
  private async rebuild(snapshot: Session): Promise<boolean> {
    const res = await this.storeCall(() =>
      this.deps.store.create({ ...snapshot, updatedAt: this.deps.clock.now() }, { maxSessions: this.deps.limits.maxSessions, maxPerOwner: 0 }),
    );
    if (res.ok) this.deps.onChange?.(snapshot, null);
    return res.ok;
  }

  /** Enforces deadlines the agents should have enforced, for when an agent is gone. */
  startReaper(intervalMs: number): { stop(): Promise<void> } {
    return startLoop({
      clock: this.deps.clock,
      intervalMs,
      onError: (err) => this.deps.logger.error('reaper pass failed', { err }),
      tick: async () => void (await this.reapOnce()),
    });
  }

  /**
   * One reaper pass over the active sessions `which` selects; returns how many stay active. A start
   * RPC ends within startTimeoutMs, so a session still pending well past that lost its start (a
   * router died mid-call): it needs no in-memory record of starts, so any replica may reap it.
   */
  async reapOnce(which: (s: Session) => boolean = () => true): Promise<number> {
    const now = this.deps.clock.now();
    const [active, agents] = await Promise.all([this.deps.store.listActive(), this.deps.hub.agents()]);
    let remaining = 0;
    for (const s of active.filter(which)) {
      if (s.expiresAt + 5000 < now) await this.stop(s, 'timed_out', 'timed_out');
      else if (s.status === 'pending' && s.createdAt + this.deps.limits.startTimeoutMs + 5000 < now) {
        await this.transition(s.id, { status: 'failed', failureReason: 'start did not finish in time' });
      } else if (s.status === 'running' && this.lostItsAgent(s, agents, now)) {
        // Nobody runs it any more (or nobody can say): it ends, and its slot frees. An agent that comes
        // back later is told to stop it by its next sync.
        await this.transition(s.id, {
          status: 'failed',
          failureReason: `agent lost: no agent for node "${s.node}" of cluster "${s.cluster}" for ${Math.round(this.deps.limits.agentLostGraceMs / 1000)} s`,
        });
      } else remaining++;
    }
    const stillActive = new Set(active.map((s) => s.id));
    for (const id of this.ownedHere) if (!stillActive.has(id)) this.ownedHere.delete(id);
    for (const id of this.unownedSince.keys()) if (!stillActive.has(id)) this.unownedSince.delete(id);
    return remaining;
  }

  /** Whether no connected agent has spoken for running `s`, which this process saw owned, for the whole grace period. */
  private lostItsAgent(s: Session, agents: AgentInfo[], now: number): boolean {
    if (agents.some((a) => SessionService.speaksFor(a, s))) {
      this.ownedHere.add(s.id);
      this.unownedSince.delete(s.id);
      return false;
    }
    if (!this.ownedHere.has(s.id)) return false;
    const since = this.unownedSince.get(s.id) ?? now;
    this.unownedSince.set(s.id, since);
    if (now - since < this.deps.limits.agentLostGraceMs) return false;
    this.unownedSince.delete(s.id);
    this.ownedHere.delete(s.id);
    return true;
  }

  /** The start's outcome (running or failed) arrives as the RPC's result; later changes come as reports.
   * Resolves with the session as the outcome left it in the store (null if that is unknown). */
  private start(session: Session, { reach, traceparent }: CreateContext, logger: Logger): Promise<Session | null> {
    const { hub, limits } = this.deps;
    const sessionUrl = reach?.sessionUrlOf?.(session.id);
    const params = { session, ...(reach ? { publicUrl: reach.publicUrl } : {}), ...(sessionUrl ? { sessionUrl } : {}), ...(traceparent ? { traceparent } : {}) };
    return hub
      .call({ cluster: session.cluster, node: session.node }, 'session.start', params, limits.startTimeoutMs)
      .then((report) => {
        this.ownedHere.add(session.id);
        return this.applyReport(report, null, logger);
      })
      .catch(async (err: unknown) => {
        logger.warn('session start failed', { session: session.id, err });
        const reason = startFailureReason(err, limits.startTimeoutMs);
        const failed = await this.transition(session.id, { status: 'failed', failureReason: reason }).catch(() => null);
        // The agent may have got part of the way; make sure nothing is left running.
        await hub.call({ cluster: session.cluster, node: session.node }, 'session.stop', { id: session.id, reason: 'orphaned' }, STOP_TIMEOUT_MS).catch(() => {});
        return failed;
      });
  }

  private async stop(s: Session, status: 'terminated' | 'timed_out', reason: 'deleted' | 'timed_out'): Promise<Session> {
    try {
      await this.deps.hub.call({ cluster: s.cluster, node: s.node }, 'session.stop', { id: s.id, reason }, STOP_TIMEOUT_MS);
    } catch (err) {
      // Capacity is released anyway; the agent stops leftovers when it syncs on reconnect.
      this.deps.logger.warn('agent did not confirm stop', { session: s.id, err });
    }
    const res = await this.transition(s.id, { status });
    return res ?? s;
  }

  /**
   * A status change from an agent: `agent` when it reported on its own (checked: its cluster and node,
   * and a running session's node never changes), null for the answer to this router's own start call.
   */
  private async applyReport(report: SessionReport, agent: AgentInfo | null, logger = this.deps.logger): Promise<Session | null> {
    if (agent) {
      const s = await this.get(report.id);
      if (!s) {
        this.deps.logger.warn('report about an unknown session', { session: report.id, agent: agent.agentId });
        return null;
      }
      if (!SessionService.speaksFor(agent, s) || (s.status === 'running' && report.node !== undefined && report.node !== s.node)) {
        this.deps.logger.warn('refused a report about a session of another agent', { session: report.id, agent: agent.agentId, cluster: agent.cluster, node: agent.node });
        return null;
      }
    }
    const change: SessionChange = { status: report.status, node: report.node, endpoints: report.endpoints, failureReason: report.failureReason };
    const res = await this.transition(report.id, change, logger);
    if (!res) {
      this.deps.logger.warn('report about an unknown session', { session: report.id, agent: agent?.agentId });
      return null;
    }
    return res;
  }

  private async transition(id: string, change: SessionChange, logger = this.deps.logger): Promise<Session | null> {
    const res = await this.storeCall(() => this.deps.store.transition(id, change, this.deps.clock.now()));
    if (!res) return null;
    if (res.changed) {
      const s = res.session;
      this.proxyCache?.put(s);
      const fields: Record<string, unknown> = { session: id, status: s.status, from: res.previous };
      if (s.failureReason) fields.reason = s.failureReason;
      if (s.status === 'running' && s.startedAt) fields.createToReadyMs = s.startedAt - s.createdAt;
      logger.info('session status changed', fields);
      this.deps.onChange?.(s, res.previous);
    }
    return res.session;
  }

  private async storeCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof AppError) throw err;
      throw new AppError('STORE_UNAVAILABLE', 'the session store did not answer', { cause: err });
    }
  }
}

/** A reason a user can act on, not a chain of transport messages. */
function startFailureReason(err: unknown, startTimeoutMs: number): string {
  const code = err instanceof AppError ? err.code : 'INTERNAL';
  if (code === 'TIMEOUT') return `the browser did not start within ${Math.round(startTimeoutMs / 1000)} s`;
  if (code === 'AGENT_DISCONNECTED') return 'the agent disconnected while starting the browser';
  return `start failed: ${(err as Error).message}`;
}
