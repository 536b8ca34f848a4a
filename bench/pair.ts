import { CHROMIUM } from '../harness/processes.js';
import { spawnEntry, type Spawned } from '../harness/spawn.js';

/**
 * A router of its own (a key prefix of its own on the bench's Redis) and one local agent tunnelled to
 * it, each a process; the caller stops `procs`, also when this throws part way.
 */
export async function spawnRouterAndAgent(opts: {
  redisUrl: string;
  routerEnv: Record<string, string>;
  keyPrefix: string;
  maxSessions: number;
  token: string;
  nodeName: string;
  agentEnv: Record<string, string>;
  procs: Spawned[];
}): Promise<{ routerUrl: string; metricsPort: number }> {
  const router = spawnEntry('router/node.ts', { ...opts.routerEnv, REDIS_URL: opts.redisUrl, REDIS_KEY_PREFIX: opts.keyPrefix, MAX_SESSIONS: String(opts.maxSessions) });
  opts.procs.push(router);
  const routerUrl = JSON.parse(await router.waitForLine(/router listening/)).url as string;
  const agent = spawnEntry('agent/main.ts', {
    ROUTER_URL: routerUrl,
    AGENT_TOKEN: opts.token,
    NODE_NAME: opts.nodeName,
    METRICS_PORT: '0',
    METRICS_HOST: '127.0.0.1',
    CHROMIUM_PATH: CHROMIUM,
    LOG_LEVEL: 'info',
    ...opts.agentEnv,
  });
  opts.procs.push(agent);
  const metricsPort = JSON.parse(await agent.waitForLine(/agent started/, 30_000)).metricsPort as number;
  await agent.waitForLine(/tunnel connected/, 30_000);
  return { routerUrl, metricsPort };
}
