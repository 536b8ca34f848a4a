import type { Clock } from '../shared/clock.js';
import type { TunnelPeer } from '../shared/tunnel/peer.js';
import { devtoolsVersion } from './runtime/devtools.js';
import type { SessionManager } from './sessions.js';

/** One health pass: is each running browser answering CDP? The result goes to the router. */
export async function checkBrowsers(deps: { sessions: SessionManager; clock: Clock; peer: TunnelPeer | null; timeoutMs: number }): Promise<void> {
  const running = deps.sessions.running();
  const sessions = await Promise.all(
    running.map(async ({ id, endpoints, devtools }) => ({
      id,
      reachable: devtools
        ? await devtools.answers(deps.timeoutMs)
        : endpoints?.apiPort !== undefined && (await devtoolsVersion(endpoints.host, endpoints.apiPort, deps.timeoutMs)) !== null,
    })),
  );
  if (deps.peer) await deps.peer.call('agent.health', { checkedAt: deps.clock.now(), sessions, active: deps.sessions.active }, 5000);
}
