import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { backoffDelay, sleep, type Clock } from '../shared/clock.js';
import type { Logger } from '../shared/logger.js';
import { messageSender, zeroMask } from '../shared/node-socket.js';
import { TunnelPeer, type RpcHandlers } from '../shared/tunnel/peer.js';
import { MAX_TUNNEL_MESSAGE_BYTES } from '../shared/tunnel/handshake.js';
import { ControlMessage, PROTOCOL_VERSION, TunnelClose, type Hello, type StreamSpec } from '../shared/tunnel/protocol.js';
import type { TunnelStream } from '../shared/tunnel/stream.js';

export type TunnelClientDeps = {
  url: string;
  token: string;
  hello: Omit<Hello, 't' | 'v'>;
  clock: Clock;
  logger: Logger;
  handlers: RpcHandlers;
  onStreamOpen: (stream: TunnelStream, spec: StreamSpec) => void;
  /** Called after each successful handshake (one per replica); reconciliation and report replay start here. */
  onConnected: (peer: TunnelPeer) => void;
  backoff?: { baseMs: number; capMs: number };
  heartbeatMs?: number;
};

/** One tunnel, to one router replica ('' when the router names none: a single router or the Workers directory). */
type Link = { replica: string; peer: TunnelPeer; ws: WebSocket; leaving: boolean };

type DialOutcome = 'new' | 'same-replica';

const HANDSHAKE_TIMEOUT_MS = 10_000;
const LOAD_TIMEOUT_MS = 5000;
/** Redialling the balanced URL after reaching a replica already held: quick at first, then every few seconds. */
const SAME_REPLICA_BACKOFF = { baseMs: 100, capMs: 2000 };

/**
 * Keeps a tunnel to every router replica (konnectivity's agent): dial the one load-balanced URL, learn
 * from the welcome which replica answered and which are live, keep it if it is new, and redial until
 * one is held per live replica. Replicas announce changes to the live set; a replica whose
 * announcement leaves itself out is draining: it is no longer used for reports and closes the tunnel
 * itself once its proxied connections end. Failed dials back off with capped jitter.
 */
export class TunnelClient {
  private readonly links = new Map<string, Link>();
  /** The live replicas as last announced; null until a router names any. */
  private wanted: string[] | null = null;
  private dialing: WebSocket | null = null;
  private readonly stopped = new AbortController();
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private pendingLoad: number | null = null;
  /** Counts announcements of the live set, so the redial pace restarts when it changes. */
  private announcements = 0;

  constructor(private readonly deps: TunnelClientDeps) {}

  /** One live tunnel for calls that any replica can answer (reports, sync): the oldest not leaving. */
  get current(): TunnelPeer | null {
    return this.peers[0] ?? null;
  }

  /** Every live tunnel not leaving: health reports go to each, since each replica answers status itself. */
  get peers(): TunnelPeer[] {
    return [...this.links.values()].filter((l) => !l.leaving && !l.peer.isClosed).map((l) => l.peer);
  }

  /** The replicas this agent holds a tunnel to. */
  get replicas(): string[] {
    return [...this.links.keys()];
  }

  /** The live replicas as the routers last said (empty until one names any). */
  get knownReplicas(): string[] {
    return this.wanted ?? [];
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Tells every replica the agent's load now; a burst of changes in one turn sends only the last. */
  announceLoad(active: number): void {
    const scheduled = this.pendingLoad !== null;
    this.pendingLoad = active;
    if (scheduled) return;
    queueMicrotask(() => {
      const load = this.pendingLoad!;
      this.pendingLoad = null;
      for (const peer of this.peers) peer.call('agent.load', { active: load }, LOAD_TIMEOUT_MS).catch((err) => this.deps.logger.debug('load report not taken', { err }));
    });
  }

  async stop(): Promise<void> {
    this.stopped.abort(new Error('agent stopping'));
    for (const link of this.links.values()) {
      link.peer.close(1001, 'agent shutting down');
      link.ws.terminate();
    }
    this.dialing?.terminate();
    this.changed();
    await this.loop;
    // A dial that was answered while stopping holds no tunnel either.
    for (const link of this.links.values()) link.ws.terminate();
  }

  /** Drops every connection abruptly (as a network failure would); the loop redials. */
  disconnect(): void {
    for (const link of this.links.values()) link.ws.terminate();
  }

  private changed(): void {
    this.wake?.();
    this.wake = null;
  }

  /** A tunnel is missing: none held (besides leaving ones), or a live replica without one. */
  private needsTunnel(): boolean {
    if (!this.peers.length) return true;
    return (this.wanted ?? []).some((id) => !this.links.has(id));
  }

  private async run(): Promise<void> {
    const { baseMs, capMs } = this.deps.backoff ?? { baseMs: 250, capMs: 15_000 };
    let failures = 0;
    let repeats = 0;
    let seenAnnouncements = 0;
    while (!this.stopped.signal.aborted) {
      if (!this.needsTunnel()) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      let outcome: DialOutcome | 'failed';
      try {
        outcome = await this.dial();
      } catch (err) {
        if (this.stopped.signal.aborted) break;
        this.deps.logger.warn('tunnel connect failed', { err, attempt: failures });
        outcome = 'failed';
      }
      if (outcome === 'new') {
        failures = 0;
        repeats = 0;
        continue;
      }
      // A replica just announced is worth reaching soon, however many dials went to held ones before.
      if (this.announcements !== seenAnnouncements) repeats = 0;
      seenAnnouncements = this.announcements;
      const delay = outcome === 'same-replica' ? backoffDelay(repeats++, SAME_REPLICA_BACKOFF.baseMs, SAME_REPLICA_BACKOFF.capMs) : backoffDelay(failures++, baseMs, capMs);
      await sleep(this.deps.clock, delay, this.stopped.signal).catch(() => {});
    }
  }

  /** One connection attempt: settles at the welcome (the tunnel then lives on) or when it fails before. */
  private dial(): Promise<DialOutcome> {
    const { deps } = this;
    return new Promise<DialOutcome>((resolve, reject) => {
      const ws = new WebSocket(deps.url, {
        headers: { authorization: `Bearer ${deps.token}` },
        perMessageDeflate: false,
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
        maxPayload: MAX_TUNNEL_MESSAGE_BYTES,
        skipUTF8Validation: true,
        generateMask: zeroMask,
      });
      this.dialing = ws;
      let socket: Socket | null = null;
      let link: Link | null = null;
      const welcomeTimer = deps.clock.setTimeout(() => ws.terminate(), HANDSHAKE_TIMEOUT_MS);
      const settled = () => {
        deps.clock.clearTimeout(welcomeTimer);
        if (this.dialing === ws) this.dialing = null;
      };
      ws.on('unexpected-response', (_req, res) => {
        settled();
        ws.terminate();
        reject(new Error(res.statusCode === 401 ? 'router rejected the agent token (401)' : `router answered ${res.statusCode} to the tunnel upgrade`));
      });
      ws.on('upgrade', (res) => (socket = res.socket as Socket));
      ws.on('open', () => {
        const held = [...this.links.keys()].filter(Boolean);
        ws.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, ...deps.hello, ...(held.length ? { replicasHeld: held } : {}) } satisfies Hello));
      });
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (link) return link.peer.receive(isBinary ? data : data.toString());
        let msg: ReturnType<typeof ControlMessage.safeParse> | null = null;
        try {
          msg = ControlMessage.safeParse(JSON.parse(data.toString()));
        } catch {
          // handled below
        }
        settled();
        if (!msg?.success || msg.data.t !== 'welcome') {
          ws.close(TunnelClose.BAD_HELLO, 'expected welcome');
          return reject(new Error('the router did not answer with a welcome'));
        }
        if (this.stopped.signal.aborted) {
          ws.close(1001, 'agent shutting down');
          return reject(new Error('agent stopping'));
        }
        const { replica = '', replicas } = msg.data;
        if (replicas) this.wanted = replicas;
        const held = this.links.get(replica);
        if (held && !held.peer.isClosed) {
          ws.close(TunnelClose.SAME_REPLICA, 'already connected to this replica');
          return resolve('same-replica');
        }
        link = this.hold(ws, socket!, replica);
        resolve('new');
      });
      ws.on('close', (code, reason) => {
        settled();
        if (link) {
          link.peer.handleTransportClosed('AGENT_DISCONNECTED', `tunnel closed (${code} ${reason.toString()})`);
          if (this.links.get(link.replica) === link) this.links.delete(link.replica);
          deps.logger.warn('tunnel dropped', { replica: link.replica || undefined, code, reason: reason.toString() });
          this.changed();
        } else if (code === TunnelClose.SAME_REPLICA) resolve('same-replica');
        else reject(new Error(`tunnel closed before the welcome (${code} ${reason.toString()})`));
      });
      ws.on('error', (err) => {
        if (!link) reject(err);
      });
    });
  }

  private hold(ws: WebSocket, socket: Socket, replica: string): Link {
    const { deps } = this;
    const sender = messageSender(ws, socket);
    const link = { replica, ws, leaving: false } as Link;
    link.peer = new TunnelPeer({
      transport: { send: (d) => sender.send(d), close: (code, reason) => ws.close(code, reason) },
      clock: deps.clock,
      logger: deps.logger,
      handlers: {
        ...deps.handlers,
        'router.replicas': async ({ replicas }) => {
          this.announced(link, replicas);
          return {};
        },
      },
      onStreamOpen: deps.onStreamOpen,
      heartbeatMs: deps.heartbeatMs,
    });
    this.links.set(replica, link);
    deps.logger.info('tunnel connected', { url: deps.url, replica: replica || undefined, tunnels: this.links.size });
    deps.onConnected(link.peer);
    return link;
  }

  /** A replica told the live set; one that leaves itself out is draining (it closes the tunnel when done). */
  private announced(from: Link, replicas: string[]): void {
    this.wanted = replicas;
    this.announcements++;
    if (from.replica && !replicas.includes(from.replica) && !from.leaving) {
      from.leaving = true;
      this.deps.logger.info('router replica leaving', { replica: from.replica });
    }
    this.changed();
  }
}
