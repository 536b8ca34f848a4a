import type { Clock } from '../shared/clock.js';
import type { TunnelPeer } from '../shared/tunnel/peer.js';
import { browserAnswers } from './runtime/devtools.js';
import type { SessionManager } from './sessions.js';

/** One health pass: is each running browser answering CDP? The result goes to every router replica
 * the agent holds a tunnel to (each answers status requests from what it heard). */
export async function checkBrowsers(deps: { sessions: SessionManager; clock: Clock; peers: TunnelPeer[]; timeoutMs: number }): Promise<void> {
  const running = deps.sessions.running();
  const sessions = await Promise.all(
    running.map(async ({ id, endpoints, devtools }) => ({
      id,
      reachable: devtools ? await devtools.answers(deps.timeoutMs) : endpoints !== undefined && (await browserAnswers(endpoints, deps.timeoutMs)),
    })),
  );
  const report = { checkedAt: deps.clock.now(), sessions, active: deps.sessions.active };
  await Promise.all(deps.peers.map((peer) => peer.call('agent.health', report, 5000)));
}
