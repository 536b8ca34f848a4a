import type { Session } from '../../shared/session.js';
import type { RpcMethod, RpcParams, RpcResult } from '../../shared/tunnel/protocol.js';

export type AgentInfo = { agentId: string; cluster: string; node: string; runtime: string; connectedAt: number };
export type Placement = { cluster: string; node?: string };
export type BrowserHealth = { reachable: boolean; checkedAt: number };

/**
 * The router's view of connected agents. Node keeps live tunnels in process (InProcessHub); the
 * Workers runtime keeps them in a Durable Object per cluster and reaches them remotely. The core
 * only talks to this port.
 */
export interface TunnelHub {
  agents(): Promise<AgentInfo[]>;
  /** The agent that will run a new session (of the requested cluster); null when none is connected. */
  place(requestedCluster?: string): Promise<AgentInfo | null>;
  call<M extends RpcMethod>(to: Placement, method: M, params: RpcParams<M>, timeoutMs: number): Promise<RpcResult<M>>;
  /** Is an agent for `to` connected, and the last health report about the session's browser (one call,
   * so a remote hub answers a status request in one round trip). */
  observe(to: Placement, sessionId: string): Promise<{ connected: boolean; health: BrowserHealth | null }>;
  /** Carries one proxied request (HTTP, or a WebSocket upgrade where the runtime can) to the browser. */
  proxy(session: Session, req: Request, path: string, wsBase: string): Promise<Response>;
}
