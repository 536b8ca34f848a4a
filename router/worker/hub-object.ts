import { systemClock } from '../../shared/clock.js';
import { AppError, toWire } from '../../shared/errors.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { Session } from '../../shared/session.js';
import { acceptHello, HELLO_TIMEOUT_MS, welcome } from '../../shared/tunnel/handshake.js';
import { PING, PONG, type TunnelPeer } from '../../shared/tunnel/peer.js';
import { TunnelClose } from '../../shared/tunnel/protocol.js';
import { sendableCloseCode } from '../../shared/ws-frames.js';
import { composeRouter, type RouterCore } from '../compose.js';
import { workerAssets } from './assets.js';
import { DataPlane, type ProxyTarget } from '../data-plane/data-plane.js';
import { bridgeMessages } from '../data-plane/ws-bridge.js';
import { errorJson } from '../http/errors.js';
import { agentInfoOf, type AgentInfo, type Placement } from '../tunnel/hub.js';
import { InProcessHub } from '../tunnel/in-process-hub.js';
import { edgePublicUrl, edgeRedis, edgeRequestInfo, loadEdgeConfig, type WorkerEnv } from './env.js';
import { asBytes, autoResponse, newWebSocketPair, upgradeResponse, type DurableObjectState, type WorkerWebSocket } from './platform.js';
import { TARGET_HEADERS } from './remote-hub.js';

type Attachment = { phase: 'hello'; since: number; cluster: string } | { phase: 'agent'; info: AgentInfo };

const DEAD_AFTER_MS = 45_000;
const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

/**
 * One per cluster: holds that cluster's agent tunnels (hibernatable WebSockets: an idle tunnel costs
 * nothing, pings are answered by the runtime) and carries RPCs and proxied streams over them. The
 * composition core, hub, handshake and data plane are the same code the Node router runs; this file
 * only translates the Durable Object's sockets, alarms and storage.
 */
export class TunnelHubObject {
  private readonly logger: Logger;
  private readonly hub: InProcessHub;
  private readonly core: RouterCore;
  private readonly dataPlane: DataPlane;
  private readonly checkEveryMs: number;
  /** By agent id: after a wake-up the runtime may hand back other objects for the same sockets. */
  private readonly peers = new Map<string, { peer: TunnelPeer; since: number }>();

  constructor(
    private readonly state: DurableObjectState,
    private readonly env: WorkerEnv,
  ) {
    const config = loadEdgeConfig(env);
    this.checkEveryMs = config.alarmIntervalMs;
    this.logger = createLogger({ level: config.logLevel, base: { component: 'edge-hub' }, write: (l) => console.log(l) });
    this.hub = new InProcessHub({
      clock: systemClock,
      logger: this.logger,
      handlersFor: (a) => this.core.service.agentHandlers(a),
      reportableBy: (a, ids) => this.core.service.reportableBy(a, ids),
      // The directory places sessions for the stateless Worker: it learns each agent's load from here.
      onLoad: (a, active) => void this.directory('/load', { agentId: a.agentId, active }).catch((err) => this.logger.warn('directory did not take a load report', { err })),
      heartbeatMs: 0,
    });
    this.dataPlane = new DataPlane({ openStream: (to, spec, o) => this.hub.openStream(to, spec, o), clock: systemClock });
    const { redis, store } = edgeRedis(config, systemClock);
    this.core = composeRouter({
      config,
      store,
      redis,
      publicUrl: edgePublicUrl(config),
      requestInfo: (c) => edgeRequestInfo(c.req.raw),
      hub: this.hub,
      clock: systemClock,
      logger: this.logger,
      metrics: { contentType: 'text/plain', render: async () => '', observeRequest: () => {} },
      proxyCacheTtlMs: 0,
      // Never served here (the Worker answers /docs), but the core's app has the routes.
      assets: workerAssets(),
      proxy: (req) => this.proxy(req),
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
          return await this.acceptAgent(req.headers.get('x-bso-cluster') ?? '');
        case '/rpc': {
          const { to, method, params, timeoutMs } = (await req.json()) as { to: Placement; method: 'session.start'; params: never; timeoutMs: number };
          try {
            return Response.json({ ok: true, value: await this.hub.call(to, method, params, timeoutMs) });
          } catch (err) {
            return Response.json({ ok: false, error: toWire(err) });
          }
        }
        case '/observe':
          return Response.json(await this.hub.observe(placementOf(url), url.searchParams.get('session') ?? ''));
        case '/proxy':
          return await this.proxy(req);
        default:
          throw new AppError('NOT_FOUND', 'no such hub route');
      }
    } catch (err) {
      return errorJson(err);
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
    const outcome = acceptHello(asBytes(message), a?.phase === 'hello' ? a.cluster : '');
    if (!outcome.ok) return ws.close(outcome.code, outcome.reason);
    const { hello } = outcome;
    const info = agentInfoOf(hello, Date.now());
    ws.serializeAttachment({ phase: 'agent', info } satisfies Attachment);
    ws.send(welcome());
    // The object's name is its cluster; remember it for the reaper, which runs with no request.
    await this.state.storage.put('cluster', info.cluster);
    this.attach(ws, info);
    await this.directory('/register', info);
    await this.scheduleCheck(Date.now() + this.checkEveryMs);
  }

  async webSocketClose(ws: WorkerWebSocket, code: number, reason: string): Promise<void> {
    await this.dropped(ws, `agent tunnel closed (${code} ${reason})`);
  }

  async webSocketError(ws: WorkerWebSocket): Promise<void> {
    await this.dropped(ws, 'agent tunnel failed');
  }

  /**
   * On an alarm, not timers (timers would keep the object awake and die with it): close sockets that
   * sent no hello in time, drop silent agent links, and end this cluster's sessions past their
   * deadline, as the Node router's reaper does.
   */
  async alarm(): Promise<void> {
    const now = Date.now();
    for (const ws of this.state.getWebSockets()) {
      const a = ws.deserializeAttachment() as Attachment | null;
      if (a?.phase !== 'agent') {
        if (now - (a?.since ?? 0) >= HELLO_TIMEOUT_MS) ws.close(TunnelClose.BAD_HELLO, 'no hello');
        continue;
      }
      const last = this.state.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? a.info.connectedAt;
      if (now - last > DEAD_AFTER_MS) {
        this.logger.warn('agent silent, closing its tunnel', { silentMs: now - last });
        ws.close(TunnelClose.HEARTBEAT_TIMEOUT, 'heartbeat timeout');
        await this.dropped(ws, 'heartbeat timeout');
      }
    }
    const cluster = await this.state.storage.get<string>('cluster');
    const active = cluster ? await this.core.service.reapOnce((s) => s.cluster === cluster).catch((err) => (this.logger.error('reaper pass failed', { err }), 1)) : 0;
    if (this.state.getWebSockets().length || active > 0) await this.scheduleCheck(Date.now() + this.checkEveryMs);
  }

  private async acceptAgent(cluster: string): Promise<Response> {
    const [client, server] = newWebSocketPair();
    this.state.acceptWebSocket(server);
    const since = Date.now();
    server.serializeAttachment({ phase: 'hello', since, cluster } satisfies Attachment);
    await this.scheduleCheck(since + HELLO_TIMEOUT_MS);
    return upgradeResponse(client);
  }

  private attach(ws: WorkerWebSocket, info: AgentInfo): TunnelPeer {
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

  /** The alarm fires at the earliest moment anything needs checking. */
  private async scheduleCheck(at: number): Promise<void> {
    const current = await this.state.storage.getAlarm();
    if (current === null || at < current) await this.state.storage.setAlarm(at);
  }

  private async directory(path: string, body: unknown): Promise<void> {
    const stub = this.env.DIRECTORY.get(this.env.DIRECTORY.idFromName('directory'));
    await stub.fetch(`https://directory${path}`, { method: 'POST', body: JSON.stringify(body) });
  }

  /** A client request the Worker forwarded, with the target it resolved and checked: HTTP through a
   * stream, or a WebSocket, message by message. */
  private async proxy(forwarded: Request): Promise<Response> {
    const t = targetOf(forwarded);
    const headers = new Headers(forwarded.headers);
    for (const h of Object.values(TARGET_HEADERS)) headers.delete(h);
    if (headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      return this.dataPlane.fetch(t, new Request(forwarded.url, { method: forwarded.method, headers, body: forwarded.body, duplex: 'half' } as RequestInit));
    }
    const { stream, head } = await this.dataPlane.webSocket(t, headers, 'messages');
    const [client, server] = newWebSocketPair();
    server.accept();
    const bridge = bridgeMessages(
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
    return upgradeResponse(client, head.protocol ? { 'sec-websocket-protocol': head.protocol } : undefined);
  }
}

/** The target the Worker resolved, carried in headers (the hub object is reachable only from the Worker). */
function targetOf(req: Request): ProxyTarget {
  return {
    session: Session.parse(JSON.parse(req.headers.get(TARGET_HEADERS.session) ?? 'null')),
    path: req.headers.get(TARGET_HEADERS.path) ?? '/',
    wsBase: req.headers.get(TARGET_HEADERS.wsBase) ?? '',
    connectToken: req.headers.get(TARGET_HEADERS.connectToken) ?? undefined,
    setCookie: req.headers.get(TARGET_HEADERS.setCookie) ?? undefined,
    target: targetName(req.headers.get(TARGET_HEADERS.target)),
  };
}

function targetName(value: string | null): ProxyTarget['target'] {
  return value === 'ui' || value === 'api' ? value : undefined;
}

function placementOf(url: URL): Placement {
  return { cluster: url.searchParams.get('cluster') ?? '', node: url.searchParams.get('node') ?? undefined };
}
