import { systemClock } from '../../shared/clock.js';
import { AppError } from '../../shared/errors.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { Session } from '../../shared/session.js';
import { PING, PONG } from '../../shared/tunnel/peer.js';
import { ControlMessage, PROTOCOL_VERSION } from '../../shared/tunnel/protocol.js';
import { errorBody, toAppError } from '../http/errors.js';
import { proxyHttp, withTimeout } from '../proxy/http-proxy.js';
import { forwardableHeaders, streamSpecFor } from '../proxy/target.js';
import { bridgeWebSocket, sendableCloseCode } from '../proxy/ws-bridge.js';
import { SessionService } from '../sessions/service.js';
import { RedisSessionStore } from '../store/redis.js';
import { UpstashCommands } from '../store/upstash-commands.js';
import type { AgentInfo, Placement } from '../tunnel/hub.js';
import { InProcessHub } from '../tunnel/in-process-hub.js';
import { loadEdgeConfig, type WorkerEnv } from './env.js';
import { asBytes, autoResponse, newWebSocketPair, upgradeResponse, type DurableObjectState, type WorkerWebSocket } from './platform.js';

type Attachment = { phase: 'hello'; since: number; cluster: string } | { phase: 'agent'; info: AgentInfo };

const DEAD_AFTER_MS = 45_000;
const OPEN_TIMEOUT_MS = 15_000;
const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

/**
 * One per cluster: holds that cluster's agent tunnels (hibernatable WebSockets: an idle tunnel costs
 * nothing, pings are answered by the runtime) and carries RPCs and proxied streams over them. The
 * tunnel, hub, session service and proxy are the same code the Node router runs.
 */
export class TunnelHubObject {
  private readonly logger: Logger;
  private readonly hub: InProcessHub;
  private readonly service: SessionService;
  private readonly checkEveryMs: number;
  /** By agent id: after a wake-up the runtime may hand back other objects for the same sockets. */
  private readonly peers = new Map<string, { peer: ReturnType<InProcessHub['attach']>; since: number }>();

  constructor(
    private readonly state: DurableObjectState,
    private readonly env: WorkerEnv,
  ) {
    const config = loadEdgeConfig(env);
    this.checkEveryMs = config.alarmIntervalMs;
    this.logger = createLogger({ level: config.logLevel, base: { component: 'edge-hub' }, write: (l) => console.log(l) });
    const store = new RedisSessionStore({ commands: new UpstashCommands(config.upstash), keyPrefix: config.redisKeyPrefix, retentionSec: config.retentionSec });
    this.hub = new InProcessHub({ clock: systemClock, logger: this.logger, handlersFor: (a) => this.service.agentHandlers(a), heartbeatMs: 0 });
    this.service = new SessionService({
      store,
      hub: this.hub,
      clock: systemClock,
      logger: this.logger,
      limits: { maxSessions: config.maxSessions, defaultTimeoutSec: config.sessionTimeoutSec, defaultIdleTimeoutSec: config.sessionIdleTimeoutSec, startTimeoutMs: config.startTimeoutMs },
    });
    this.state.setWebSocketAutoResponse(autoResponse(PING, PONG));
    // After hibernation the object is new but its sockets are not: take them back.
    for (const ws of this.state.getWebSockets()) {
      const a = ws.deserializeAttachment() as Attachment | null;
      if (a?.phase === 'agent') this.attach(ws, a.info);
    }
  }

  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    try {
      switch (url.pathname) {
        case '/agent':
          return this.acceptAgent(req.headers.get('x-bso-cluster') ?? '');
        case '/rpc': {
          const { to, method, params, timeoutMs } = (await req.json()) as { to: Placement; method: 'session.start'; params: never; timeoutMs: number };
          return Response.json({ ok: true, value: await this.hub.call(to, method, params, timeoutMs) });
        }
        case '/observe':
          return Response.json(await this.hub.observe(placementOf(url), url.searchParams.get('session') ?? ''));
        case '/proxy':
          return await this.proxy(req);
        default:
          throw new AppError('NOT_FOUND', 'no such hub route');
      }
    } catch (err) {
      const e = toAppError(err);
      if (url.pathname === '/rpc') return Response.json({ ok: false, error: { code: e.code, message: e.message, status: e.status } });
      return Response.json(errorBody(e), { status: e.status });
    }
  }

  /** Hibernation API: called for every message, also after the object was evicted and woken. */
  async webSocketMessage(ws: WorkerWebSocket, message: string | ArrayBuffer): Promise<void> {
    const a = ws.deserializeAttachment() as Attachment | null;
    if (a?.phase === 'agent') {
      const known = this.peers.get(a.info.agentId);
      const peer = known?.since === a.info.connectedAt ? known.peer : this.attach(ws, a.info);
      peer.receive(asBytes(message));
      return;
    }
    const parsed = typeof message === 'string' ? ControlMessage.safeParse(safeJson(message)) : null;
    if (!parsed?.success || parsed.data.t !== 'hello') return ws.close(4002, 'expected hello');
    const hello = parsed.data;
    // The Worker routed this socket here by the cluster in the URL; the hello must say the same.
    if (a?.phase === 'hello' && hello.clusterId !== a.cluster) return ws.close(4004, `hello names cluster ${hello.clusterId}, URL named ${a.cluster}`);
    if (hello.v !== PROTOCOL_VERSION) return ws.close(4003, `protocol version ${hello.v} unsupported; router speaks ${PROTOCOL_VERSION}`);
    const info: AgentInfo = { agentId: hello.agentId, cluster: hello.clusterId, node: hello.nodeName, runtime: hello.runtime, connectedAt: Date.now() };
    ws.serializeAttachment({ phase: 'agent', info } satisfies Attachment);
    ws.send(JSON.stringify({ t: 'welcome', v: PROTOCOL_VERSION }));
    // The object's name is its cluster; remember it for the reaper, which runs with no request.
    await this.state.storage.put('cluster', info.cluster);
    this.attach(ws, info);
    await this.directory('/register', info);
    await this.scheduleCheck();
  }

  async webSocketClose(ws: WorkerWebSocket, code: number, reason: string): Promise<void> {
    await this.dropped(ws, `agent tunnel closed (${code} ${reason})`);
  }

  async webSocketError(ws: WorkerWebSocket): Promise<void> {
    await this.dropped(ws, 'agent tunnel failed');
  }

  /**
   * On an alarm, not timers (timers would keep the object awake and die with it): drop silent agent
   * links, and end this cluster's sessions past their deadline, as the Node router's reaper does.
   */
  async alarm(): Promise<void> {
    const now = Date.now();
    for (const ws of this.state.getWebSockets()) {
      const a = ws.deserializeAttachment() as Attachment | null;
      const last = this.state.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? (a?.phase === 'agent' ? a.info.connectedAt : (a?.since ?? now));
      if (now - last > DEAD_AFTER_MS) {
        this.logger.warn('agent silent, closing its tunnel', { silentMs: now - last });
        ws.close(4000, 'heartbeat timeout');
        await this.dropped(ws, 'heartbeat timeout');
      }
    }
    const cluster = await this.state.storage.get<string>('cluster');
    const active = cluster ? await this.service.reapOnce((s) => s.cluster === cluster).catch((err) => (this.logger.error('reaper pass failed', { err }), 1)) : 0;
    if (this.state.getWebSockets().length || active > 0) await this.scheduleCheck();
  }

  private acceptAgent(cluster: string): Response {
    const [client, server] = newWebSocketPair();
    this.state.acceptWebSocket(server);
    server.serializeAttachment({ phase: 'hello', since: Date.now(), cluster } satisfies Attachment);
    return upgradeResponse(client);
  }

  private attach(ws: WorkerWebSocket, info: AgentInfo) {
    const peer = this.hub.attach(info, { send: (d) => ws.send(d), close: (code, reason) => ws.close(code, reason) });
    this.peers.set(info.agentId, { peer, since: info.connectedAt });
    return peer;
  }

  private async dropped(ws: WorkerWebSocket, reason: string): Promise<void> {
    const a = ws.deserializeAttachment() as Attachment | null;
    if (a?.phase !== 'agent') return;
    const known = this.peers.get(a.info.agentId);
    // A reconnect of the same agent may already have replaced this socket; leave the new one alone.
    if (known?.since !== a.info.connectedAt) return;
    this.peers.delete(a.info.agentId);
    known.peer.handleTransportClosed('AGENT_DISCONNECTED', reason);
    await this.directory('/unregister', { agentId: a.info.agentId });
  }

  private async scheduleCheck(): Promise<void> {
    if ((await this.state.storage.getAlarm()) === null) await this.state.storage.setAlarm(Date.now() + this.checkEveryMs);
  }

  private async directory(path: string, body: unknown): Promise<void> {
    const stub = this.env.DIRECTORY.get(this.env.DIRECTORY.idFromName('directory'));
    await stub.fetch(`https://directory${path}`, { method: 'POST', body: JSON.stringify(body) });
  }

  /** A client request the Worker forwarded: HTTP through a stream, or a WebSocket, message by message. */
  private async proxy(req: Request): Promise<Response> {
    const session = Session.parse(JSON.parse(req.headers.get('x-bso-session') ?? 'null'));
    const path = req.headers.get('x-bso-path') ?? '/';
    const wsBase = req.headers.get('x-bso-ws-base') ?? '';
    const headers = new Headers(req.headers);
    for (const h of ['x-bso-session', 'x-bso-path', 'x-bso-ws-base']) headers.delete(h);
    const placement = { cluster: session.cluster, node: session.node };
    if (req.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      const clean = new Request(req.url, { method: req.method, headers, body: req.body, duplex: 'half' } as RequestInit);
      return proxyHttp({ hub: this.hub, clock: systemClock }, session, clean, path, wsBase);
    }
    const stream = this.hub.openStream(placement, streamSpecFor(session, 'ws', 'GET', path, forwardableHeaders(headers)));
    const answer = await withTimeout(systemClock, stream.head, OPEN_TIMEOUT_MS, () => stream.close(1011, 'open timed out'));
    const [client, server] = newWebSocketPair();
    server.accept();
    const bridge = bridgeWebSocket(
      {
        // A Workers WebSocket has no backpressure signal to pause on; credit goes back as it is sent.
        send: (payload, binary, onSent) => {
          server.send(binary ? payload : textDecoder.decode(payload));
          onSent();
        },
        close: (code, reason) => server.close(code, reason),
        pause: () => {},
        resume: () => {},
      },
      stream,
    );
    server.addEventListener('message', (ev) => bridge.fromClient(typeof ev.data === 'string' ? textEncoder.encode(ev.data) : new Uint8Array(ev.data), typeof ev.data !== 'string'));
    server.addEventListener('close', (ev) => {
      bridge.clientClosed(ev.code, ev.reason);
      // workerd does not answer a client's close frame by itself; without this the client waits out
      // its close timeout (30 s in Playwright's WebSocket library).
      try {
        server.close(sendableCloseCode(ev.code), ev.reason);
      } catch {
        // already closed
      }
    });
    return upgradeResponse(client, answer.protocol ? { 'sec-websocket-protocol': answer.protocol } : undefined);
  }
}

function placementOf(url: URL): Placement {
  return { cluster: url.searchParams.get('cluster') ?? '', node: url.searchParams.get('node') ?? undefined };
}

const safeJson = (s: string): unknown => {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
};
