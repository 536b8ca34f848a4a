import type { Hello, RpcMethod, RpcParams, RpcResult } from '../../shared/tunnel/protocol.js';

/** A connected agent; `capacity`: how many sessions it can hold, when it says so. */
export type AgentInfo = { agentId: string; cluster: string; node: string; runtime: string; connectedAt: number; capacity?: number };

export const agentInfoOf = (hello: Hello, connectedAt: number): AgentInfo => ({
  agentId: hello.agentId,
  cluster: hello.clusterId,
  node: hello.nodeName,
  runtime: hello.runtime,
  connectedAt,
  ...(hello.capacity !== undefined ? { capacity: hello.capacity } : {}),
});
export type Placement = { cluster: string; node?: string };
export type BrowserHealth = { reachable: boolean; checkedAt: number };

/**
 * Which agent: the router's view of connected agents, placement, RPC and observation. Node keeps live
 * tunnels in process (InProcessHub); the Workers runtime keeps them in a Durable Object per cluster and
 * reaches them remotely. Carrying bytes is the data plane's job (router/data-plane/).
 */
export interface TunnelHub {
  agents(): Promise<AgentInfo[]>;
  /** The agent that will run a new session (of the requested cluster); null when none is connected. */
  place(requestedCluster?: string): Promise<AgentInfo | null>;
  call<M extends RpcMethod>(to: Placement, method: M, params: RpcParams<M>, timeoutMs: number): Promise<RpcResult<M>>;
  /** Is an agent for `to` connected, and the last health report about the session's browser (one call,
   * so a remote hub answers a status request in one round trip). */
  observe(to: Placement, sessionId: string): Promise<{ connected: boolean; health: BrowserHealth | null }>;
}
