import { z } from 'zod';

export const SESSION_STATUSES = ['pending', 'running', 'terminated', 'failed', 'timed_out'] as const;
export const SessionStatus = z.enum(SESSION_STATUSES);
export type SessionStatus = z.infer<typeof SessionStatus>;

export const TERMINAL_STATUSES: ReadonlySet<SessionStatus> = new Set(['terminated', 'failed', 'timed_out']);
export const isTerminal = (s: SessionStatus): boolean => TERMINAL_STATUSES.has(s);

/** Browser launch options a client may ask for. Kept small and explicit: arbitrary flags would let a
 * client turn off isolation (e.g. --remote-debugging-address), so only vetted knobs are accepted. */
export const SessionOptions = z.strictObject({
  userAgent: z.string().min(1).max(512).optional(),
  viewport: z.strictObject({ width: z.number().int().min(100).max(7680), height: z.number().int().min(100).max(4320) }).optional(),
  locale: z
    .string()
    .regex(/^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$/)
    .optional(),
});
export type SessionOptions = z.infer<typeof SessionOptions>;

/** Where the agent reaches the browser; opaque to the router. */
export const SessionEndpoints = z.strictObject({
  host: z.string().min(1),
  apiPort: z.number().int().min(1).max(65535).optional(),
  uiPort: z.number().int().min(1).max(65535).optional(),
  browserWsPath: z.string().startsWith('/devtools/browser/').optional(),
});
export type SessionEndpoints = z.infer<typeof SessionEndpoints>;

export const SessionId = z.string().regex(/^[a-z0-9][a-z0-9-]{7,62}$/, 'not a session id');

/** What the store keeps. Times are epoch milliseconds; timeouts are seconds (the API's unit). */
export const Session = z.strictObject({
  id: SessionId,
  status: SessionStatus,
  createdAt: z.number().int(),
  updatedAt: z.number().int(),
  startedAt: z.number().int().optional(),
  endedAt: z.number().int().optional(),
  expiresAt: z.number().int(),
  timeout: z.number().int().positive(),
  idleTimeout: z.number().int().positive(),
  options: SessionOptions,
  cluster: z.string().min(1),
  node: z.string().optional(),
  /** Id of the API key that created it; only that key (and admins) may see or use it. */
  owner: z.string().min(1).max(80).optional(),
  endpoints: SessionEndpoints.optional(),
  failureReason: z.string().optional(),
});
export type Session = z.infer<typeof Session>;

/** Status changes an agent may report; the router decides whether the transition is allowed. */
export const SessionReport = z.strictObject({
  id: SessionId,
  status: SessionStatus,
  node: z.string().optional(),
  endpoints: SessionEndpoints.optional(),
  failureReason: z.string().max(2000).optional(),
  at: z.number().int(),
  /** The agent's load once this happened (sessions it holds), for placement; never stored. */
  active: z.number().int().min(0).max(1_000_000).optional(),
});
export type SessionReport = z.infer<typeof SessionReport>;

export const ALLOWED_TRANSITIONS: Record<SessionStatus, readonly SessionStatus[]> = {
  pending: ['running', 'terminated', 'failed', 'timed_out'],
  running: ['terminated', 'failed', 'timed_out'],
  terminated: [],
  failed: [],
  timed_out: [],
};
export const canTransition = (from: SessionStatus, to: SessionStatus): boolean => from === to || ALLOWED_TRANSITIONS[from].includes(to);
