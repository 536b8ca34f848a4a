import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { Clock } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';
import { asBytes, messageSender } from '../../shared/node-socket.js';
import { AppError } from '../../shared/errors.js';
import { acceptHello, admitAgent, HELLO_TIMEOUT_MS, MAX_TUNNEL_MESSAGE_BYTES, type AgentTokens } from '../../shared/tunnel/handshake.js';
import { TunnelClose } from '../../shared/tunnel/protocol.js';
import type { InProcessHub } from '../tunnel/in-process-hub.js';
import { agentInfoOf } from '../tunnel/hub.js';
import { rejectUpgrade } from './upgrade.js';

/** Accepts agent tunnels on Node's sockets: the handshake module decides, the hub owns the tunnel. */
export function createAgentEndpoint(deps: {
  hub: InProcessHub;
  tokens: AgentTokens;
  clock: Clock;
  logger: Logger;
  /** This replica's id, and the welcome an accepted agent gets (which replica it reached, which are live). */
  replicaId: string;
  welcome: () => string;
  /** False while the replica drains: a new tunnel gets 503, so the agent redials and reaches another. */
  admitting: () => boolean;
}) {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_TUNNEL_MESSAGE_BYTES });
  return {
    async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
      socket.on('error', () => {});
      const remote = req.socket.remoteAddress ?? '';
      let cluster: string;
      try {
        if (!deps.admitting()) throw new AppError('ROUTER_DRAINING', 'this router replica is shutting down', { retryAfterSec: 1 });
        ({ cluster } = await admitAgent(
          { authorization: req.headers.authorization, upgrade: req.headers.upgrade, url: new URL(req.url ?? '/', 'http://router.invalid') },
          deps.tokens,
        ));
      } catch (err) {
        deps.logger.warn('agent rejected', { remote, reason: (err as Error).message });
        return rejectUpgrade(socket, err);
      }
      wss.handleUpgrade(req, socket, head, (ws) => awaitHello(ws, socket as Socket, cluster, remote));
    },
    close(): void {
      for (const c of wss.clients) c.terminate();
      wss.close();
    },
  };

  function awaitHello(ws: WebSocket, socket: Socket, cluster: string, remote: string): void {
    const timer = deps.clock.setTimeout(() => ws.close(TunnelClose.BAD_HELLO, 'no hello'), HELLO_TIMEOUT_MS);
    ws.on('error', (err) => deps.logger.warn('agent socket error', { err, remote }));
    ws.once('message', (data: RawData, isBinary: boolean) => {
      deps.clock.clearTimeout(timer);
      const outcome = acceptHello(isBinary ? asBytes(data) : data.toString(), cluster);
      if (!outcome.ok) {
        deps.logger.warn('agent rejected', { remote, reason: outcome.reason });
        return ws.close(outcome.code, outcome.reason);
      }
      const { hello } = outcome;
      // The agent already holds a tunnel here: attaching this one would replace that one (and its streams).
      if (hello.replicasHeld?.includes(deps.replicaId)) return ws.close(TunnelClose.SAME_REPLICA, 'already connected to this replica');
      const sender = messageSender(ws, socket);
      sender.send(deps.welcome());
      const peer = deps.hub.attach(agentInfoOf(hello, deps.clock.now()), { send: (d) => sender.send(d), close: (code, reason) => ws.close(code, reason) });
      ws.on('message', (d: RawData, binary: boolean) => peer.receive(binary ? asBytes(d) : d.toString()));
      ws.on('close', (code, reason) => peer.handleTransportClosed('AGENT_DISCONNECTED', `agent tunnel closed (${code} ${reason.toString()})`));
    });
  }
}
