import { z } from 'zod';
import { intVar, parseEnv, type Env } from '../../shared/env.js';
import type { Clock } from '../../shared/clock.js';
import { createStore } from '../compose.js';
import { loadRouterConfig, type RouterConfig } from '../config.js';
import { webRequestInfo, type PublicUrlPolicy, type RequestInfo } from '../public-url.js';
import type { RedisCommands } from '../store/redis-commands.js';
import type { SessionStore } from '../store/types.js';
import { UpstashCommands } from '../store/upstash-commands.js';
import type { DurableObjectNamespace } from './platform.js';

/** Bindings from wrangler.toml: vars, secrets, and the Durable Object namespaces. */
export type WorkerEnv = Record<string, unknown> & { HUB: DurableObjectNamespace; DIRECTORY: DurableObjectNamespace };

const UpstashEnv = z.object({
  UPSTASH_REDIS_REST_URL: z.url(),
  UPSTASH_REDIS_REST_TOKEN: z.string().min(1),
  /** How often a cluster hub's alarm checks its links and reaps expired sessions. */
  EDGE_ALARM_INTERVAL_MS: intVar(15_000, 100),
});

export type EdgeConfig = RouterConfig & { upstash: { url: string; token: string }; alarmIntervalMs: number };

/** The same router configuration as on Node, plus where Upstash is; validated once per isolate. */
export function loadEdgeConfig(env: WorkerEnv): EdgeConfig {
  const vars: Env = Object.fromEntries(Object.entries(env).filter(([, v]) => typeof v === 'string')) as Env;
  const up = parseEnv(UpstashEnv, vars);
  return {
    ...loadRouterConfig({ PORT: '0', ...vars }, 'edge'),
    upstash: { url: up.UPSTASH_REDIS_REST_URL, token: up.UPSTASH_REDIS_REST_TOKEN },
    alarmIntervalMs: up.EDGE_ALARM_INTERVAL_MS,
  };
}

/** The Worker and the cluster hubs share one Redis (Upstash over REST): sessions, keys, rate limits. */
export function edgeRedis(config: EdgeConfig, clock: Clock): { redis: RedisCommands; store: SessionStore } {
  const redis = new UpstashCommands(config.upstash);
  return { redis, store: createStore(config, redis, clock) };
}

/** On Workers the platform routes only the hosts configured for the Worker, so the request's own URL
 * is trustworthy; ALLOWED_HOSTS narrows it further, PUBLIC_URL overrides it. */
export const edgePublicUrl = (config: EdgeConfig): PublicUrlPolicy => ({
  publicUrl: config.publicUrl,
  trustProxy: config.trustProxy,
  allowedHosts: config.allowedHosts,
  defaultHosts: () => null,
  fallbackHost: (url) => config.allowedHosts[0] ?? url.host,
});

/** Cloudflare sets CF-Connecting-IP itself (a client cannot forge it past the edge). */
export const edgeRequestInfo = (req: Request): RequestInfo => webRequestInfo(req, (req.headers.get('cf-connecting-ip') ?? 'unknown').slice(0, 64));
