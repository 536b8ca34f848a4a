/**
 * `npm run dev:edge`: the Workers router locally in workerd (miniflare), bundled from router/worker.ts
 * with the Durable Object bindings of wrangler.toml, and one local agent dialling it (as `npm start`
 * has), so a session works at once. Uses UPSTASH_REDIS_REST_URL/TOKEN when set; otherwise starts a
 * local redis-server behind an Upstash-compatible REST endpoint. The Worker needs keys: without
 * API_KEYS/ADMIN_API_KEYS (or AUTH_MODE) it makes up an admin key for this run and prints it.
 * SIGINT/SIGTERM stop the agent, workerd and redis-server and remove every temporary folder.
 */
import { randomBytes } from 'node:crypto';
import { loadAgentConfig } from '../agent/config.js';
import { startAgent } from '../agent/main.js';
import { readNodeEnv } from '../shared/node-env.js';
import { startEdgeRouter } from '../harness/edge.js';
import { startRedis } from '../harness/processes.js';
import { startUpstashRest } from '../harness/upstash-rest.js';

/** Each step of the shutdown is bounded: one stuck step must not keep the others from running. */
const STOP_STEP_TIMEOUT_MS = 10_000;

const env = readNodeEnv();
const token = env.AGENT_TOKEN ?? randomBytes(24).toString('hex');
/** Undone last first on stop. */
const cleanups: Array<{ what: string; run: () => Promise<void> }> = [];
let stopping = false;
const stop = async (code: number) => {
  if (stopping) return;
  stopping = true;
  for (const c of cleanups.reverse()) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      c.run(),
      new Promise<void>((_, reject) => (timer = setTimeout(() => reject(new Error(`did not stop within ${STOP_STEP_TIMEOUT_MS} ms`)), STOP_STEP_TIMEOUT_MS))),
    ])
      .catch((err: unknown) => console.error(JSON.stringify({ level: 'warn', msg: `stopping the ${c.what} failed`, err: (err as Error).message })))
      .finally(() => clearTimeout(timer));
  }
  process.exit(code);
};
const onSignal = () => void stop(0);
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
/**
 * miniflare's exit hook answers SIGINT/SIGTERM by exiting at once (130/143), which would cut this
 * shutdown short and leave its folders behind: only ours stays. Its 'exit' hook (which kills workerd
 * however the process ends) is kept.
 */
const keepOnlyOurSignalHandler = () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) for (const l of process.listeners(signal)) if (l !== onSignal) process.removeListener(signal, l);
};

try {
  let upstash = { url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN };
  if (!upstash.url || !upstash.token) {
    const redis = await startRedis();
    cleanups.push({ what: 'redis-server', run: () => redis.stop() });
    // However this process ends, its redis-server (own process group) ends with it.
    process.once('exit', () => {
      try {
        process.kill(-redis.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    });
    const restToken = randomBytes(16).toString('hex');
    const rest = await startUpstashRest(redis.url, restToken);
    cleanups.push({ what: 'Upstash REST endpoint', run: () => rest.close() });
    upstash = { url: rest.url, token: restToken };
  }
  const vars = Object.fromEntries(
    Object.entries(env).filter(
      ([k, v]) =>
        v !== undefined &&
        /^(MAX_SESSIONS|SESSION_|LOG_LEVEL|PUBLIC_URL|START_TIMEOUT_MS|MAX_BODY_BYTES|AUTH_MODE|API_KEYS|ADMIN_API_KEYS|API_KEY_CACHE_MS|METRICS_TOKEN|ALLOWED_|TRUST_PROXY|RATE_LIMIT_)/.test(
          k,
        ),
    ),
  ) as Record<string, string>;
  const devKey = !vars.AUTH_MODE && !vars.API_KEYS && !vars.ADMIN_API_KEYS ? `bso_dev_${randomBytes(18).toString('hex')}` : undefined;
  if (devKey) vars.ADMIN_API_KEYS = `dev:${devKey}`;
  vars.SESSION_TOKEN_SECRET ??= randomBytes(32).toString('hex');
  const edge = await startEdgeRouter({ bindings: { ...vars, AGENT_TOKEN: token, UPSTASH_REDIS_REST_URL: upstash.url!, UPSTASH_REDIS_REST_TOKEN: upstash.token! } });
  keepOnlyOurSignalHandler();
  cleanups.push({ what: 'Worker (workerd)', run: () => edge.close() });
  console.log(JSON.stringify({ msg: 'edge router listening', url: edge.url, agentToken: env.AGENT_TOKEN ? '(from env)' : token, apiKey: devKey ?? '(from env)' }));
  const agentConfig = loadAgentConfig({ ...env, AGENT_TOKEN: token, ROUTER_URL: edge.url, NODE_NAME: env.NODE_NAME ?? 'local' }, process.getuid?.() === 0);
  const agent = await startAgent({ ...agentConfig, metricsPortFallback: env.METRICS_PORT === undefined });
  cleanups.push({ what: 'agent', run: () => agent.close() });
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  await stop(1);
}
