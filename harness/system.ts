import { loadAgentConfig } from '../agent/config.js';
import { startAgent, type RunningAgent } from '../agent/main.js';
import { createLogger } from '../shared/logger.js';
import { loadRouterConfig } from '../router/config.js';
import { startRouter, type RunningRouter } from '../router/node.js';
import { startEdgeRouter } from './edge.js';
import { CHROMIUM, requireBinary, startRedis } from './processes.js';
import { startUpstashRest } from './upstash-rest.js';

export const TEST_TOKEN = 'test-token-0123456789abcdef';
const logLevel = (process.env.TEST_LOG_LEVEL ?? 'silent') as 'silent';

export type TestSystem = {
  /** The Node router; absent when the system runs the Workers router (`runtime: 'edge'`). */
  router?: RunningRouter;
  runtime: 'node' | 'edge';
  agents: RunningAgent[];
  url: string;
  addAgent(env?: Record<string, string>): Promise<RunningAgent>;
  close(): Promise<void>;
};

/**
 * Router and agent(s) with real Chromium, on free loopback ports; closed in afterAll. `runtime: 'edge'`
 * runs the Workers router in miniflare instead, with Upstash (REST endpoint) over a real redis-server.
 */
export async function startSystem(
  opts: { routerEnv?: Record<string, string>; agentEnv?: Record<string, string>; agents?: number; runtime?: 'node' | 'edge' } = {},
): Promise<TestSystem> {
  requireBinary(CHROMIUM, 'install the Debian package chromium (.ci/run does)');
  const runtime = opts.runtime ?? 'node';
  const cleanups: Array<() => Promise<void>> = [];
  let router: RunningRouter | undefined;
  let url: string;
  if (runtime === 'node') {
    router = await startRouter(loadRouterConfig({ PORT: '0', HOST: '127.0.0.1', AGENT_TOKEN: TEST_TOKEN, LOG_LEVEL: logLevel, ...opts.routerEnv }));
    url = router.url;
    cleanups.push(() => router!.close());
  } else {
    const redis = await startRedis();
    const rest = await startUpstashRest(redis.url, 'edge-rest-token');
    const { REDIS_URL: _ignored, WS_PROXY_MODE: _mode, ...vars } = opts.routerEnv ?? {};
    const edge = await startEdgeRouter({
      bindings: { AGENT_TOKEN: TEST_TOKEN, LOG_LEVEL: logLevel, ...vars, UPSTASH_REDIS_REST_URL: rest.url, UPSTASH_REDIS_REST_TOKEN: 'edge-rest-token' },
    });
    url = edge.url;
    cleanups.push(
      () => edge.close(),
      () => rest.close(),
      () => redis.stop(),
    );
  }
  const agents: RunningAgent[] = [];
  const addAgent = async (env: Record<string, string> = {}) => {
    const agent = await startAgent(
      loadAgentConfig(
        {
          ROUTER_URL: url,
          AGENT_TOKEN: TEST_TOKEN,
          NODE_NAME: `node-${agents.length}`,
          METRICS_PORT: '0',
          METRICS_HOST: '127.0.0.1',
          CHROMIUM_PATH: CHROMIUM,
          LOG_LEVEL: logLevel,
          ...opts.agentEnv,
          ...env,
        },
        process.getuid?.() === 0,
      ),
    );
    agents.push(agent);
    return agent;
  };
  for (let i = 0; i < (opts.agents ?? 1); i++) await addAgent();
  if (agents.length) await waitFor(async () => ((await (await fetch(`${url}/health`)).json()) as { agents: unknown[] }).agents.length === agents.length, 15_000);
  return {
    router,
    runtime,
    agents,
    url,
    addAgent,
    close: async () => {
      await Promise.all(agents.map((a) => a.close()));
      for (const c of cleanups) await c();
    },
  };
}

export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const quietLogger = () => createLogger({ level: 'silent' });

export async function json<T = any>(res: Response | Promise<Response>): Promise<{ status: number; body: T }> {
  const r = await res;
  return { status: r.status, body: (await r.json()) as T };
}
