/**
 * `npm run dev:edge`: the Workers router locally in workerd (miniflare), bundled from router/worker.ts
 * with the Durable Object bindings of wrangler.toml. Uses UPSTASH_REDIS_REST_URL/TOKEN when set;
 * otherwise starts a local redis-server behind an Upstash-compatible REST endpoint. Point an agent
 * at the printed URL (ROUTER_URL) with the same AGENT_TOKEN. The Worker needs keys: without
 * API_KEYS/ADMIN_API_KEYS (or AUTH_MODE) it makes up an admin key for this run and prints it.
 */
import { randomBytes } from 'node:crypto';
import { readNodeEnv } from '../shared/node-env.js';
import { startEdgeRouter } from '../harness/edge.js';
import { startRedis } from '../harness/processes.js';
import { startUpstashRest } from '../harness/upstash-rest.js';

const env = readNodeEnv();
const token = env.AGENT_TOKEN ?? randomBytes(24).toString('hex');
const cleanups: Array<() => Promise<void>> = [];
let upstash = { url: env.UPSTASH_REDIS_REST_URL, token: env.UPSTASH_REDIS_REST_TOKEN };
if (!upstash.url || !upstash.token) {
  const redis = await startRedis();
  const restToken = randomBytes(16).toString('hex');
  const rest = await startUpstashRest(redis.url, restToken);
  cleanups.push(
    () => rest.close(),
    () => redis.stop(),
  );
  // However this process ends, its redis-server (own process group) ends with it.
  process.once('exit', () => {
    try {
      process.kill(-redis.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
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
console.log(JSON.stringify({ msg: 'edge router listening', url: edge.url, agentToken: env.AGENT_TOKEN ? '(from env)' : token, apiKey: devKey ?? '(from env)' }));
const stop = async () => {
  await edge.close();
  for (const c of cleanups.reverse()) await c();
  process.exit(0);
};
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
