import type { Clock } from '../shared/clock.js';
import type { Session } from '../shared/session.js';
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

export type RouterCore = { service: SessionService; app: ReturnType<typeof createApp> };

/**
 * The composition core every router runtime shares (Node root, the Worker, the Durable Object): the
 * session service and the HTTP app over the ports the runtime supplies. Runtime roots add only
 * sockets and platform bindings around it.
 */
export function composeRouter(
  deps: Omit<AppDeps, 'service' | 'config'> & {
    config: RouterConfig;
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
      defaultTimeoutSec: config.sessionTimeoutSec,
      defaultIdleTimeoutSec: config.sessionIdleTimeoutSec,
      startTimeoutMs: config.startTimeoutMs,
    },
    onChange: deps.onChange,
    proxyCacheTtlMs: deps.proxyCacheTtlMs,
  });
  const app = createApp({
    service,
    store,
    hub,
    clock,
    logger,
    metrics: deps.metrics,
    proxy: deps.proxy,
    config: { maxBodyBytes: config.maxBodyBytes, publicUrl: config.publicUrl },
  });
  return { service, app };
}
