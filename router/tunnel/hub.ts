import type { RpcMethod, RpcParams, RpcResult, StreamSpec } from '../../shared/tunnel/protocol.js';
import type { TunnelStream } from '../../shared/tunnel/stream.js';

export type AgentInfo = { agentId: string; cluster: string; node: string; runtime: string; connectedAt: number };
export type Placement = { cluster: string; node?: string };
export type BrowserHealth = { reachable: boolean; checkedAt: number };

/**
 * The router's view of connected agents. Node keeps live tunnels in process (InProcessHub); the
 * Workers runtime keeps them in a Durable Object per cluster. The core only talks to this port.
 */
export interface TunnelHub {
  agents(): AgentInfo[];
  /** The cluster a new session goes to, and the agent there that will run it; null when none is connected. */
  place(requestedCluster?: string): AgentInfo | null;
  call<M extends RpcMethod>(to: Placement, method: M, params: RpcParams<M>, timeoutMs: number): Promise<RpcResult<M>>;
  openStream(to: Placement, spec: StreamSpec, opts?: { bodyless?: boolean }): TunnelStream;
  /** The last health report about a session's browser, if an agent sent one. */
  browserHealth(sessionId: string): BrowserHealth | null;
  isConnected(to: Placement): boolean;
}
