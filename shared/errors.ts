import { z } from 'zod';

/**
 * Every failure the system reports: a stable code, the HTTP status it maps to, and a cause. Declared
 * together here; the router turns them into responses in one place (router/http/errors.ts), and they
 * cross the tunnel as `WireError` with code and status intact.
 */
export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  INVALID_JSON: 400,
  VALIDATION_FAILED: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN_ORIGIN: 403,
  NOT_FOUND: 404,
  SESSION_NOT_FOUND: 404,
  SESSION_NOT_RUNNING: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  UPGRADE_REQUIRED: 426,
  RATE_LIMITED: 429,
  QUOTA_EXCEEDED: 429,
  CAPACITY_EXHAUSTED: 429,
  TOO_MANY_CONNECTIONS: 429,
  INTERNAL: 500,
  AGENT_ERROR: 502,
  BROWSER_UNREACHABLE: 502,
  AGENT_DISCONNECTED: 503,
  NO_AGENT: 503,
  STORE_UNAVAILABLE: 503,
  /** This router replica is shutting down; another one (behind the same address) takes the request. */
  ROUTER_DRAINING: 503,
  TIMEOUT: 504,
} as const;
export type ErrorCode = keyof typeof ERROR_STATUS;

export const isErrorCode = (code: string): code is ErrorCode => Object.hasOwn(ERROR_STATUS, code);

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: unknown;
  /** Whole seconds a client should wait before retrying (every 429 has one): `Retry-After`. */
  readonly retryAfterSec?: number;
  /** Response headers that belong with this error (e.g. RateLimit fields). */
  readonly headers?: Record<string, string>;
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; details?: unknown; retryAfterSec?: number; headers?: Record<string, string> } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.details = opts.details;
    if (opts.retryAfterSec !== undefined) this.retryAfterSec = Math.max(1, Math.ceil(opts.retryAfterSec));
    if (opts.headers) this.headers = opts.headers;
  }
}

/** An AppError as it travels over the tunnel (RPC results, refused streams) or between edge objects. */
export const WireError = z.object({
  code: z.string().max(64),
  message: z.string().max(2000),
  status: z.number().int().optional(),
  details: z.unknown().optional(),
  retryAfterSec: z.number().int().min(1).max(86_400).optional(),
});
export type WireError = z.infer<typeof WireError>;

export function toWire(err: unknown): WireError {
  const e = err instanceof AppError ? err : new AppError('INTERNAL', 'internal error', { cause: err });
  return {
    code: e.code,
    message: e.message,
    status: e.status,
    ...(e.details !== undefined ? { details: e.details } : {}),
    ...(e.retryAfterSec !== undefined ? { retryAfterSec: e.retryAfterSec } : {}),
  };
}

/** A code this side does not know (a newer peer) becomes AGENT_ERROR, keeping the original in details. */
export function fromWire(w: WireError): AppError {
  if (isErrorCode(w.code)) return new AppError(w.code, w.message, { details: w.details, retryAfterSec: w.retryAfterSec });
  return new AppError('AGENT_ERROR', w.message, { details: { code: w.code, status: w.status } });
}
