import { z } from 'zod';
import { Session, SessionOptions, SessionStatus } from './session.js';

export const ErrorBody = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.unknown().optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

export const CreateSessionBody = z.strictObject({
  /** Hard limit in seconds, from creation. */
  timeout: z
    .number()
    .int()
    .min(5)
    .max(6 * 3600)
    .optional(),
  /** Seconds with no client connected (and no request in flight) before the session ends; an open
   * connection keeps it, however quiet. */
  idleTimeout: z
    .number()
    .int()
    .min(5)
    .max(6 * 3600)
    .optional(),
  options: SessionOptions.optional(),
  /** false: end the session when its last CDP client disconnects, rather than after `idleTimeout`. */
  keepAlive: z.boolean().optional(),
  /** Place the session on this cluster; by default any cluster with a connected agent. */
  cluster: z.string().min(1).max(63).optional(),
});
export type CreateSessionBody = z.infer<typeof CreateSessionBody>;

export const CreateSessionQuery = z.strictObject({
  wait: z.enum(['true', 'false']).optional(),
  /** Upper bound, in seconds, on how long `wait=true` holds the request. */
  waitTimeout: z.coerce.number().int().min(1).max(120).optional(),
  /** Seconds the create may wait in the fair queue for a slot when all are taken (implies `wait=true`);
   * past it, 429 CAPACITY_EXHAUSTED with Retry-After. */
  queue: z.coerce.number().int().min(1).max(600).optional(),
});

/** A client's key for one create (the `Idempotency-Key` header): asked again with the same key, a queued
 * create keeps its place in the queue, or gets the session it was given. */
export const IdempotencyKey = z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'letters, digits and . _ : - only, at most 128');

export const SessionView = Session.omit({ endpoints: true }).extend({
  cdpUrl: z.string(),
  proxyUrl: z.string(),
  /** steel's own URLs while running (its CDP socket, live debugger, session viewer), through the router. */
  websocketUrl: z.string().optional(),
  debugUrl: z.string().optional(),
  sessionViewerUrl: z.string().optional(),
  /** The session on a host of its own (SESSION_HOST_SUFFIX): its UI, with absolute paths that work. */
  uiUrl: z.string().optional(),
});
export type SessionView = z.infer<typeof SessionView>;

export const ListSessionsQuery = z.strictObject({
  status: SessionStatus.optional(),
  /** `nextCursor` of the previous page, as given: creation time (15 digits) and session id. */
  cursor: z
    .string()
    .regex(/^\d{15}:[a-z0-9][a-z0-9-]{7,62}$/, 'not a cursor this API handed out')
    .optional(),
  limit: z.coerce.number().int().min(1).max(500).optional(),
});

export const SessionList = z.object({ items: z.array(SessionView), nextCursor: z.string().nullable() });

export const SessionHealth = z.object({
  agentConnected: z.boolean(),
  lastReportAt: z.number().int().nullable(),
  browserReachable: z.boolean().nullable(),
});

export const SessionStatusView = z.object({
  id: z.string(),
  status: SessionStatus,
  failureReason: z.string().optional(),
  expiresAt: z.number().int(),
  health: SessionHealth,
});

export const HealthView = z.object({
  status: z.enum(['ok', 'degraded']),
  store: z.object({ ok: z.boolean(), latencyMs: z.number().nullable(), error: z.string().optional() }),
  agents: z.array(z.object({ cluster: z.string(), node: z.string(), runtime: z.string(), connectedAt: z.number().int() })),
});
