import { randomBytes } from 'node:crypto';
import { loadAgentConfig } from '../agent/config.js';
import { startAgent } from '../agent/main.js';
import { readNodeEnv } from '../shared/node-env.js';
import { loadRouterConfig } from '../router/config.js';
import { startRouter } from '../router/node.js';

/**
 * `npm start`: the router and one local agent in one process, in-memory store unless Redis is
 * configured, so a newcomer needs nothing but Chromium.
 */
async function main(): Promise<void> {
  const env = readNodeEnv();
  const token = env.AGENT_TOKEN ?? randomBytes(24).toString('hex');
  const router = await startRouter(loadRouterConfig({ ...env, AGENT_TOKEN: token }));
  const agentConfig = loadAgentConfig({ ...env, AGENT_TOKEN: token, ROUTER_URL: env.ROUTER_URL ?? router.url, NODE_NAME: env.NODE_NAME ?? 'local' }, process.getuid?.() === 0);
  // Two `npm start`s on one machine: the second takes another metrics port rather than failing.
  const agent = await startAgent({ ...agentConfig, metricsPortFallback: env.METRICS_PORT === undefined });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await agent.close();
    await router.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
