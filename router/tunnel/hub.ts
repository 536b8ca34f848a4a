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
  isConnected(to: Placement): Promise<boolean>;
  /** The last health report about a session's browser, if an agent sent one. */
  browserHealth(to: Placement, sessionId: string): Promise<BrowserHealth | null>;
  /** Carries one proxied request (HTTP, or a WebSocket upgrade where the runtime can) to the browser. */
  proxy(session: Session, req: Request, path: string, wsBase: string): Promise<Response>;
}
