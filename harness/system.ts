import { loadAgentConfig } from '../agent/config.js';
import { startAgent, type RunningAgent } from '../agent/main.js';
import { createLogger } from '../shared/logger.js';
import { loadRouterConfig } from '../router/config.js';
import { startRouter, type RunningRouter } from '../router/node.js';
import { startEdgeRouter } from './edge.js';
import { CHROMIUM, requireBinary, startRedis } from './processes.js';
import { spawnEntry, type Spawned } from './spawn.js';
import { startUpstashRest } from './upstash-rest.js';

export const TEST_TOKEN = 'test-token-0123456789abcdef';

/** API keys every test system accepts (two users and an admin) unless it runs with `auth: 'none'`. */
export const TEST_KEYS = {
  user: 'test-user-key-0123456789abcdef0123',
  other: 'test-other-key-0123456789abcdef012',
  admin: 'test-admin-key-0123456789abcdef012',
} as const;
export const TEST_SESSION_SECRET = 'test-session-token-secret-0123456789abcdef';
export const TEST_METRICS_TOKEN = 'test-metrics-token-0123456789';
export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/** Router settings for a system with keys: limits off (tests of limits set their own). */
export const KEYED_ROUTER_ENV: Record<string, string> = {
  API_KEYS: `user:${TEST_KEYS.user},other:${TEST_KEYS.other}`,
  ADMIN_API_KEYS: `admin:${TEST_KEYS.admin}`,
  SESSION_TOKEN_SECRET: TEST_SESSION_SECRET,
  METRICS_TOKEN: TEST_METRICS_TOKEN,
  RATE_LIMIT_CREATE: 'off',
  RATE_LIMIT_API: 'off',
  RATE_LIMIT_UNAUTHENTICATED: 'off',
};

/** `fetch` with a key (the `user` key unless the request names its own credentials). */
export function keyedFetch(key: string): typeof fetch {
  return (input, init = {}) => {
    const headers = new Headers(init.headers);
    if (!headers.has('authorization') && !headers.has('x-api-key')) headers.set('authorization', `Bearer ${key}`);
    return fetch(input, { ...init, headers });
  };
}
const logLevel = (process.env.TEST_LOG_LEVEL ?? 'silent') as 'silent';

export type TestSystem = {
  /** The Node router; absent when the system runs the Workers router (`runtime: 'edge'`). */
  router?: RunningRouter;
  runtime: 'node' | 'edge';
  agents: RunningAgent[];
  url: string;
  /** The Redis the router keeps its state (and stored keys) in, if any. */
  redisUrl?: string;
  /** `fetch` that sends the `user` key (plain fetch when the system runs without keys). */
  fetch: typeof fetch;
  addAgent(env?: Record<string, string>): Promise<RunningAgent>;
  close(): Promise<void>;
};

/**
 * Router and agent(s) with real Chromium, on free loopback ports; closed in afterAll. `runtime: 'edge'`
 * runs the Workers router in miniflare instead, with Upstash (REST endpoint) over a real redis-server.
 */
export async function startSystem(
  opts: { routerEnv?: Record<string, string>; agentEnv?: Record<string, string>; agents?: number; runtime?: 'node' | 'edge'; auth?: 'keys' | 'none' } = {},
): Promise<TestSystem> {
  requireBinary(CHROMIUM, 'install the Debian package chromium (.ci/run does)');
  const runtime = opts.runtime ?? 'node';
  const keyed = (opts.auth ?? 'keys') === 'keys';
  const authEnv: Record<string, string> = keyed ? KEYED_ROUTER_ENV : runtime === 'edge' ? { AUTH_MODE: 'none' } : {};
  const sysFetch = keyed ? keyedFetch(TEST_KEYS.user) : fetch;
  const cleanups: Array<() => Promise<void>> = [];
  let router: RunningRouter | undefined;
  let url: string;
  let redisUrl = opts.routerEnv?.REDIS_URL;
  const agents: RunningAgent[] = [];
  const close = async () => {
    await Promise.all(agents.map((a) => a.close()));
    // Last started, first stopped.
    for (const c of cleanups.splice(0).reverse()) await c();
  };
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
  try {
    if (runtime === 'node') {
      // Tests close their clients before the router; one that does not is not waited for.
      router = await startRouter(
        loadRouterConfig({ PORT: '0', HOST: '127.0.0.1', AGENT_TOKEN: TEST_TOKEN, LOG_LEVEL: logLevel, DRAIN_TIMEOUT_SEC: '0', ...authEnv, ...opts.routerEnv }),
      );
      url = router.url;
      cleanups.push(() => router!.close());
    } else {
      const redis = await startRedis();
      cleanups.push(() => redis.stop());
      redisUrl = redis.url;
      const rest = await startUpstashRest(redis.url, 'edge-rest-token');
      cleanups.push(() => rest.close());
      const { REDIS_URL: _ignored, WS_PROXY_MODE: _mode, ...vars } = opts.routerEnv ?? {};
      const edge = await startEdgeRouter({
        bindings: { AGENT_TOKEN: TEST_TOKEN, LOG_LEVEL: logLevel, ...authEnv, ...vars, UPSTASH_REDIS_REST_URL: rest.url, UPSTASH_REDIS_REST_TOKEN: 'edge-rest-token' },
      });
      cleanups.push(() => edge.close());
      url = edge.url;
    }
    for (let i = 0; i < (opts.agents ?? 1); i++) await addAgent();
    if (agents.length) await waitFor(async () => ((await (await sysFetch(`${url}/health`)).json()) as { agents: unknown[] }).agents.length === agents.length, 15_000);
  } catch (err) {
    // Nothing half-started is left behind: the test's afterAll never sees a system to close.
    await close();
    throw err;
  }
  return {
    router,
    runtime,
    agents,
    url,
    redisUrl,
    fetch: sysFetch,
    addAgent,
    close,
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

/** One Node router process on a shared Redis, keys on (what one replica of a Deployment is). */
export async function spawnRouter(redisUrl: string, env: Record<string, string> = {}): Promise<{ proc: Spawned; url: string; port: number }> {
  const proc = spawnEntry('router/node.ts', {
    PORT: '0',
    HOST: '127.0.0.1',
    REDIS_URL: redisUrl,
    AGENT_TOKEN: TEST_TOKEN,
    LOG_LEVEL: 'info',
    DRAIN_TIMEOUT_SEC: '0',
    ...KEYED_ROUTER_ENV,
    ...env,
  });
  try {
    const url = JSON.parse(await proc.waitForLine(/router listening/)).url as string;
    return { proc, url, port: Number(new URL(url).port) };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

/**
 * Router processes on one Redis, each with an agent of its own (a session is managed through the
 * router its agent is connected to): what two replicas behind a load balancer look like. Keys on.
 */
export async function spawnReplicas(opts: { redisUrl: string; count: number; routerEnv?: Record<string, string> }): Promise<{ urls: string[]; procs: Spawned[] }> {
  const urls: string[] = [];
  const procs: Spawned[] = [];
  try {
    for (let i = 0; i < opts.count; i++) {
      const { proc: router, url } = await spawnRouter(opts.redisUrl, opts.routerEnv);
      procs.push(router);
      urls.push(url);
      const agent = spawnEntry('agent/main.ts', {
        ROUTER_URL: url,
        AGENT_TOKEN: TEST_TOKEN,
        NODE_NAME: `node-${i}`,
        METRICS_PORT: '0',
        CHROMIUM_PATH: CHROMIUM,
        LOG_LEVEL: 'info',
      });
      procs.push(agent);
      await agent.waitForLine(/tunnel connected/);
    }
  } catch (err) {
    // Nothing half-started is left behind when a replica fails to come up.
    await Promise.all(procs.map((p) => p.stop()));
    throw err;
  }
  return { urls, procs };
}
