import type { Clock } from '../shared/clock.js';
import { randomBase64url, type HmacSha256, type Sha256Hex } from '../shared/crypto.js';
import type { Session } from '../shared/session.js';
import { Access } from './auth/access.js';
import { RedisKeyStore } from './auth/keys.js';
import { BatchingRateLimiter, MemoryRateLimiter, RedisRateLimiter } from './auth/rate-limit.js';
import { SessionTokens } from './auth/session-token.js';
import type { RouterConfig } from './config.js';
import { createApp, type AppDeps } from './http/app.js';
import { SessionService } from './sessions/service.js';
import { MemorySessionStore } from './store/memory.js';
import type { RedisCommands } from './store/redis-commands.js';
import { RedisSessionStore } from './store/redis.js';
import type { SessionStore } from './store/types.js';

/** Redis when the runtime has a client for it, else the single-process in-memory store. */
export function createStore(config: RouterConfig, commands: RedisCommands | null, clock: Clock): SessionStore {
  return commands
    ? new RedisSessionStore({ commands, keyPrefix: config.redisKeyPrefix, retentionSec: config.retentionSec })
    : new MemorySessionStore({ retentionSec: config.retentionSec, now: () => clock.now() });
}

/**
 * Access control over the same Redis as the sessions (keys made by `npm run keys`, rate-limit buckets
 * every replica shares), or in memory for a store-less router. Without SESSION_TOKEN_SECRET (allowed
 * only for a single in-memory process) tokens are signed with a secret made up at start.
 */
export function createAccess(config: RouterConfig, commands: RedisCommands | null, clock: Clock, crypto: { sha256?: Sha256Hex; hmacSha256?: HmacSha256 } = {}): Access {
  const prefix = config.redisKeyPrefix;
  const secrets = config.auth.sessionTokenSecrets.length ? config.auth.sessionTokenSecrets : [randomBase64url(32)];
  return new Access({
    config: config.auth,
    keyStore: commands ? new RedisKeyStore({ commands, keyPrefix: prefix }) : null,
    tokens: new SessionTokens(secrets, crypto.hmacSha256),
    limiter: commands ? new BatchingRateLimiter(new RedisRateLimiter({ commands, keyPrefix: prefix })) : new MemoryRateLimiter(),
    clock,
    sha256: crypto.sha256,
    sessionHosts: config.sessionHosts,
  });
}

export type RouterCore = { service: SessionService; app: ReturnType<typeof createApp>; access: Access };

/**
 * The composition core every router runtime shares (Node root, the Worker, the Durable Object): the
 * session service, access control and the HTTP app over the ports the runtime supplies. Runtime roots
 * add only sockets and platform bindings around it.
 */
export function composeRouter(
  deps: Omit<AppDeps, 'service' | 'config' | 'access'> & {
    config: RouterConfig;
    /** Redis for access control (keys, rate limits); null: in memory. */
    redis: RedisCommands | null;
    /** The runtime's own SHA-256 and HMAC, where it has them faster than Web Crypto. */
    crypto?: { sha256?: Sha256Hex; hmacSha256?: HmacSha256 };
    proxyCacheTtlMs: number;
    onChange?: (session: Session, previous: Session['status'] | null) => void;
  },
): RouterCore {
  const { config, store, hub, clock, logger } = deps;
  const service = new SessionService({
    store,
    hub,
    clock,
    logger,
    limits: {
      maxSessions: config.maxSessions,
      maxSessionsPerKey: config.auth.maxSessionsPerKey,
      defaultTimeoutSec: config.sessionTimeoutSec,
      defaultIdleTimeoutSec: config.sessionIdleTimeoutSec,
      startTimeoutMs: config.startTimeoutMs,
      agentLostGraceMs: config.agentLostGraceMs,
    },
    onChange: deps.onChange,
    queueMetrics: deps.metrics,
    proxyCacheTtlMs: deps.proxyCacheTtlMs,
  });
  const access = createAccess(config, deps.redis, clock, deps.crypto);
  const app = createApp({
    service,
    store,
    hub,
    clock,
    logger,
    access,
    metrics: deps.metrics,
    proxy: deps.proxy,
    assets: deps.assets,
    publicUrl: deps.publicUrl,
    requestInfo: deps.requestInfo,
    addResponseHeaders: deps.addResponseHeaders,
    draining: deps.draining,
    config: { maxBodyBytes: config.maxBodyBytes, allowedOrigins: config.auth.allowedOrigins, sessionHosts: config.sessionHosts },
  });
  return { service, app, access };
}
