import { z } from 'zod';
import { intVar, logLevelVar, optionalString, parseEnv, type Env } from '../shared/env.js';

const RouterEnv = z.object({
  PORT: intVar(3000, 0, 65535),
  HOST: z.string().default('0.0.0.0'),
  PUBLIC_URL: z.preprocess((v) => (v === '' ? undefined : v), z.url().optional()),
  REDIS_URL: optionalString(),
  REDIS_HOST: optionalString(),
  REDIS_PORT: intVar(6379, 1, 65535),
  REDIS_PASSWORD: optionalString(),
  REDIS_KEY_PREFIX: z.string().default('{bso}:'),
  AGENT_TOKEN: z.string().min(16, 'must be at least 16 characters'),
  SESSION_TIMEOUT: intVar(300, 5, 6 * 3600),
  SESSION_IDLE_TIMEOUT: intVar(300, 5, 6 * 3600),
  SESSION_RETENTION_SECONDS: intVar(3600, 1),
  MAX_SESSIONS: intVar(10, 1, 100_000),
  MAX_BODY_BYTES: intVar(64 * 1024, 256),
  START_TIMEOUT_MS: intVar(60_000, 1000),
  WS_PROXY_MODE: z.enum(['splice', 'messages']).default('splice'),
  LOG_LEVEL: logLevelVar(),
});

export type RouterConfig = {
  port: number;
  host: string;
  publicUrl?: string;
  redis: { url: string } | { host: string; port: number; password?: string } | null;
  redisKeyPrefix: string;
  agentToken: string;
  sessionTimeoutSec: number;
  sessionIdleTimeoutSec: number;
  retentionSec: number;
  maxSessions: number;
  maxBodyBytes: number;
  startTimeoutMs: number;
  wsProxyMode: 'splice' | 'messages';
  logLevel: z.infer<ReturnType<typeof logLevelVar>>;
};

export function loadRouterConfig(env: Env): RouterConfig {
  const e = parseEnv(RouterEnv, env);
  const redis = e.REDIS_URL ? { url: e.REDIS_URL } : e.REDIS_HOST ? { host: e.REDIS_HOST, port: e.REDIS_PORT, password: e.REDIS_PASSWORD } : null;
  return {
    port: e.PORT,
    host: e.HOST,
    publicUrl: e.PUBLIC_URL?.replace(/\/+$/, ''),
    redis,
    redisKeyPrefix: e.REDIS_KEY_PREFIX,
    agentToken: e.AGENT_TOKEN,
    sessionTimeoutSec: e.SESSION_TIMEOUT,
    sessionIdleTimeoutSec: e.SESSION_IDLE_TIMEOUT,
    retentionSec: e.SESSION_RETENTION_SECONDS,
    maxSessions: e.MAX_SESSIONS,
    maxBodyBytes: e.MAX_BODY_BYTES,
    startTimeoutMs: e.START_TIMEOUT_MS,
    wsProxyMode: e.WS_PROXY_MODE,
    logLevel: e.LOG_LEVEL,
  };
}
