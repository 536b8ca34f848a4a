import { z } from 'zod';
import type { SessionHosts } from './session-hosts.js';
import type { IoredisConnection } from './store/ioredis-commands.js';
import { parseAgentTokens, type AgentTokens } from '../shared/tunnel/handshake.js';
import { REPLICA_ID } from '../shared/tunnel/protocol.js';
import { ConfigError, intVar, isLoopbackHost, logLevelVar, optionalString, parseEnv, type Env } from '../shared/env.js';
import { parseEnvKeys, type EnvKey } from './auth/keys.js';
import { parseRatePolicy, type RatePolicy } from './auth/rate-limit.js';

const commaList = () =>
  z.preprocess(
    (v) =>
      String(v ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    z.array(z.string()),
  );

const boolVar = () =>
  z.preprocess(
    (v) => (v === '' || v === undefined ? 'false' : String(v).toLowerCase()),
    z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1'),
  );

/** Every variable the router reads (listed in .env.example). */
export const ROUTER_VARIABLES = (): string[] => Object.keys(RouterEnv.shape);

const RouterEnv = z.object({
  PORT: intVar(3000, 0, 65535),
  HOST: optionalString(),
  PUBLIC_URL: z.preprocess((v) => (v === '' ? undefined : v), z.url().optional()),
  ALLOWED_HOSTS: commaList(),
  SESSION_HOST_SUFFIX: optionalString().pipe(
    z
      .string()
      .toLowerCase()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, 'must be a DNS name (e.g. sessions.example.com, or localhost)')
      .max(190, 'leaves no room for a session id in a 253-character host name')
      .optional(),
  ),
  SESSION_HOST_TARGET: z.enum(['ui', 'api']).default('ui'),
  TRUST_PROXY: boolVar(),
  REDIS_URL: optionalString().pipe(
    z
      .string()
      .regex(/^rediss?:\/\/[^\s]+$/, 'must be a redis:// or rediss:// (TLS) URL')
      .optional(),
  ),
  REDIS_HOST: optionalString(),
  REDIS_PORT: intVar(6379, 1, 65535),
  REDIS_USERNAME: optionalString(),
  REDIS_PASSWORD: optionalString(),
  REDIS_TLS: boolVar(),
  REDIS_TLS_CA_FILE: optionalString(),
  REDIS_KEY_PREFIX: z.string().default('{bso}:'),
  AGENT_TOKEN: optionalString().pipe(z.string().min(16, 'must be at least 16 characters').optional()),
  AGENT_TOKENS: optionalString(),
  AUTH_MODE: z.preprocess((v) => (v === '' ? undefined : v), z.enum(['keys', 'none']).optional()),
  API_KEYS: optionalString(),
  ADMIN_API_KEYS: optionalString(),
  API_KEY_CACHE_MS: intVar(5000, 0, 300_000),
  SESSION_TOKEN_SECRET: commaList().pipe(z.array(z.string().min(32, 'each secret must be at least 32 characters')).max(2, 'at most two secrets (new,old)')),
  METRICS_TOKEN: optionalString().pipe(z.string().min(16, 'must be at least 16 characters').optional()),
  ALLOWED_ORIGINS: commaList().pipe(z.array(z.url().refine((u) => new URL(u).origin === u, 'an origin is scheme://host[:port], nothing more'))),
  RATE_LIMIT_CREATE: optionalString(),
  RATE_LIMIT_API: optionalString(),
  RATE_LIMIT_UNAUTHENTICATED: optionalString(),
  MAX_SESSIONS_PER_KEY: intVar(0, 0, 100_000),
  SESSION_TIMEOUT: intVar(300, 5, 6 * 3600),
  SESSION_IDLE_TIMEOUT: intVar(300, 5, 6 * 3600),
  SESSION_RETENTION_SECONDS: intVar(3600, 1),
  MAX_SESSIONS: intVar(10, 1, 100_000),
  MAX_BODY_BYTES: intVar(64 * 1024, 256),
  START_TIMEOUT_MS: intVar(60_000, 1000),
  AGENT_LOST_GRACE_SEC: intVar(30, 1, 3600),
  WS_PROXY_MODE: z.enum(['splice', 'messages']).default('splice'),
  MAX_WS_MESSAGE_BYTES: intVar(64 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
  REPLICA_ID: optionalString().pipe(z.string().regex(REPLICA_ID, 'letters, digits, ".", "_" and "-", at most 64').optional()),
  REPLICA_LEASE_SEC: intVar(15, 3, 300),
  DRAIN_TIMEOUT_SEC: intVar(20, 0, 3600),
  LOG_LEVEL: logLevelVar(),
});

export type AuthConfig = {
  /** `keys`: every request needs a key (or, on the proxy, a session token); `none`: no authentication. */
  mode: 'keys' | 'none';
  /** How the mode was chosen, for the start-up log line. */
  reason: 'AUTH_MODE' | 'API keys configured' | 'no key configured';
  envKeys: EnvKey[];
  keyCacheMs: number;
  /** Empty: the runtime makes one up (a single process only; see the composition roots). */
  sessionTokenSecrets: string[];
  metricsToken?: string;
  allowedOrigins: string[];
  limits: { create: RatePolicy | null; api: RatePolicy | null; unauthenticated: RatePolicy | null };
  maxSessionsPerKey: number;
};

export type RouterConfig = {
  port: number;
  host: string;
  publicUrl?: string;
  /** Hosts `cdpUrl`/`proxyUrl` may be built from; empty: the runtime's default (the listen address and localhost). */
  allowedHosts: string[];
  /** Each session on a host of its own (`<id>.<suffix>`); unset: the path form only. */
  sessionHosts?: SessionHosts;
  trustProxy: boolean;
  redis: IoredisConnection | null;
  redisKeyPrefix: string;
  /** AGENT_TOKENS (bound to a cluster each) and AGENT_TOKEN (any cluster without its own). */
  agentTokens: AgentTokens;
  auth: AuthConfig;
  sessionTimeoutSec: number;
  sessionIdleTimeoutSec: number;
  retentionSec: number;
  maxSessions: number;
  maxBodyBytes: number;
  startTimeoutMs: number;
  /** A running session no connected agent speaks for fails ("agent lost") after this long. */
  agentLostGraceMs: number;
  wsProxyMode: 'splice' | 'messages';
  /** Largest WebSocket message a proxied socket the router ends itself (`messages` mode) takes whole: 1009 beyond. */
  maxWsMessageBytes: number;
  /** This replica's name among the router replicas sharing a Redis; absent: one made up at start. */
  replicaId?: string;
  /** A replica that stops renewing its lease drops out of the live set after this long. */
  replicaLeaseMs: number;
  /** How long a stopping replica lets open proxied connections finish before closing them with 1001. */
  drainTimeoutMs: number;
  logLevel: z.infer<ReturnType<typeof logLevelVar>>;
};

/** Limits that apply when keys are on and the variable is unset; with no keys (loopback only) none apply unless set. */
const DEFAULT_LIMITS = { create: '60/min,burst=10', api: '1200/min,burst=200', unauthenticated: '60/min,burst=20' };

/**
 * The router's configuration. Secure by default: with no key configured the Node router listens on
 * loopback only; asking it to listen elsewhere without keys is an error unless AUTH_MODE=none says
 * authentication happens in front of it. `runtime: 'edge'` (Workers) has no listen address and
 * needs keys unless AUTH_MODE=none.
 */
export function loadRouterConfig(env: Env, runtime: 'node' | 'edge' = 'node'): RouterConfig {
  const e = parseEnv(RouterEnv, env);
  const redis = redisOf(e);
  let byCluster: Record<string, string>;
  try {
    byCluster = parseAgentTokens(e.AGENT_TOKENS);
  } catch (err) {
    throw new ConfigError(`invalid configuration:\n  AGENT_TOKENS: ${(err as Error).message}`);
  }
  if (!e.AGENT_TOKEN && Object.keys(byCluster).length === 0) {
    throw new ConfigError('invalid configuration:\n  AGENT_TOKEN: required (or AGENT_TOKENS, a token per cluster: cluster:token,…)');
  }
  const agentTokens: AgentTokens = { anyCluster: e.AGENT_TOKEN, byCluster };
  const envKeys = [...keysFrom('API_KEYS', e.API_KEYS, 'user'), ...keysFrom('ADMIN_API_KEYS', e.ADMIN_API_KEYS, 'admin')];
  const names = envKeys.map((k) => k.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new ConfigError(`invalid configuration:\n  API_KEYS/ADMIN_API_KEYS: the name "${dup}" is used twice`);

  const mode: AuthConfig['mode'] = e.AUTH_MODE ?? (envKeys.length > 0 || runtime === 'edge' ? 'keys' : 'none');
  const reason: AuthConfig['reason'] = e.AUTH_MODE ? 'AUTH_MODE' : mode === 'keys' ? 'API keys configured' : 'no key configured';
  if (mode === 'keys' && envKeys.length === 0 && !redis && runtime === 'node') {
    throw new ConfigError('invalid configuration:\n  AUTH_MODE: keys needs API_KEYS/ADMIN_API_KEYS, or REDIS_URL to hold keys made with `npm run keys`');
  }
  const host = e.HOST ?? (mode === 'keys' ? '0.0.0.0' : '127.0.0.1');
  if (mode === 'keys' && e.SESSION_TOKEN_SECRET.length === 0 && (redis || runtime === 'edge')) {
    // Every replica must verify the tokens every other replica signs.
    throw new ConfigError('invalid configuration:\n  SESSION_TOKEN_SECRET: required with API keys and a shared store (at least 32 characters; `openssl rand -hex 32`)');
  }
  if (runtime === 'node' && mode === 'none' && !e.AUTH_MODE && !isLoopbackHost(host)) {
    throw new ConfigError(
      `invalid configuration:\n  HOST: refusing to listen on ${host} without API keys: set API_KEYS (or ADMIN_API_KEYS), or AUTH_MODE=none if an authenticating proxy stands in front`,
    );
  }
  const keysOn = mode === 'keys';
  const limit = (name: 'create' | 'api' | 'unauthenticated', variable: string, text: string | undefined) => {
    try {
      return parseRatePolicy(name, text ?? (keysOn ? DEFAULT_LIMITS[name] : undefined));
    } catch (err) {
      throw new ConfigError(`invalid configuration:\n  ${variable}: ${(err as Error).message}`);
    }
  };
  return {
    port: e.PORT,
    host,
    publicUrl: e.PUBLIC_URL?.replace(/\/+$/, ''),
    sessionHosts: e.SESSION_HOST_SUFFIX ? { suffix: e.SESSION_HOST_SUFFIX, target: e.SESSION_HOST_TARGET } : undefined,
    allowedHosts: e.ALLOWED_HOSTS.map((h) => h.toLowerCase()),
    trustProxy: e.TRUST_PROXY,
    redis,
    redisKeyPrefix: e.REDIS_KEY_PREFIX,
    agentTokens,
    auth: {
      mode,
      reason,
      envKeys,
      keyCacheMs: e.API_KEY_CACHE_MS,
      sessionTokenSecrets: e.SESSION_TOKEN_SECRET,
      metricsToken: e.METRICS_TOKEN,
      allowedOrigins: e.ALLOWED_ORIGINS,
      limits: {
        create: limit('create', 'RATE_LIMIT_CREATE', e.RATE_LIMIT_CREATE),
        api: limit('api', 'RATE_LIMIT_API', e.RATE_LIMIT_API),
        unauthenticated: limit('unauthenticated', 'RATE_LIMIT_UNAUTHENTICATED', e.RATE_LIMIT_UNAUTHENTICATED),
      },
      maxSessionsPerKey: e.MAX_SESSIONS_PER_KEY,
    },
    sessionTimeoutSec: e.SESSION_TIMEOUT,
    sessionIdleTimeoutSec: e.SESSION_IDLE_TIMEOUT,
    retentionSec: e.SESSION_RETENTION_SECONDS,
    maxSessions: e.MAX_SESSIONS,
    maxBodyBytes: e.MAX_BODY_BYTES,
    startTimeoutMs: e.START_TIMEOUT_MS,
    agentLostGraceMs: e.AGENT_LOST_GRACE_SEC * 1000,
    wsProxyMode: e.WS_PROXY_MODE,
    maxWsMessageBytes: e.MAX_WS_MESSAGE_BYTES,
    ...(e.REPLICA_ID ? { replicaId: e.REPLICA_ID } : {}),
    replicaLeaseMs: e.REPLICA_LEASE_SEC * 1000,
    drainTimeoutMs: e.DRAIN_TIMEOUT_SEC * 1000,
    logLevel: e.LOG_LEVEL,
  };
}

const REDIS_VARS = { REDIS_URL: true, REDIS_HOST: true, REDIS_PORT: true, REDIS_USERNAME: true, REDIS_PASSWORD: true, REDIS_TLS: true, REDIS_TLS_CA_FILE: true } as const;
type RedisVars = Pick<z.infer<typeof RouterEnv>, keyof typeof REDIS_VARS>;

/**
 * Where Redis is and how to reach it: TLS with `rediss://` or `REDIS_TLS=true` (the CA from a file,
 * read by the Node process that connects: this module also runs on Workers), an ACL user by URL or
 * `REDIS_USERNAME`.
 */
function redisOf(e: RedisVars): RouterConfig['redis'] {
  const useTls = e.REDIS_TLS || e.REDIS_URL?.startsWith('rediss://') || e.REDIS_TLS_CA_FILE !== undefined;
  const withTls = useTls ? { tls: e.REDIS_TLS_CA_FILE ? { caFile: e.REDIS_TLS_CA_FILE } : {} } : {};
  if (e.REDIS_URL) return { url: e.REDIS_URL, ...withTls };
  if (e.REDIS_HOST) return { host: e.REDIS_HOST, port: e.REDIS_PORT, username: e.REDIS_USERNAME, password: e.REDIS_PASSWORD, ...withTls };
  return null;
}

/** What `npm run keys` needs: where the router's Redis is (the same variables the router reads). */
export function loadKeysConfig(env: Env): { redis: NonNullable<RouterConfig['redis']>; redisKeyPrefix: string } {
  const e = parseEnv(RouterEnv.pick({ ...REDIS_VARS, REDIS_KEY_PREFIX: true }), env);
  const redis = redisOf(e);
  if (!redis) throw new ConfigError("invalid configuration:\n  REDIS_URL: keys are stored in the router's Redis; set REDIS_URL (or REDIS_HOST)");
  return { redis, redisKeyPrefix: e.REDIS_KEY_PREFIX };
}

function keysFrom(variable: string, text: string | undefined, role: 'user' | 'admin'): EnvKey[] {
  try {
    return parseEnvKeys(text, role);
  } catch (err) {
    // The message names the entry, never the key itself.
    throw new ConfigError(`invalid configuration:\n  ${variable}: ${(err as Error).message}`);
  }
}
