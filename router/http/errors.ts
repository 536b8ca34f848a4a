import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { AppError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';

/** Turns anything thrown into the one error shape; the only place errors become HTTP. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof HTTPException) {
    if (err.status === 413) return new AppError('PAYLOAD_TOO_LARGE', err.message || 'request body too large', { cause: err });
    if (err.status === 400) return new AppError('INVALID_JSON', err.message || 'malformed request', { cause: err });
    if (err.status === 404) return new AppError('NOT_FOUND', 'no such route', { cause: err });
    return new AppError('BAD_REQUEST', err.message, { cause: err });
  }
  return new AppError('INTERNAL', 'internal error', { cause: err });
}

/** Headers an error response carries besides its body: Retry-After on every 429, RateLimit fields. */
export function errorHeaders(e: AppError): Record<string, string> {
  return { ...e.headers, ...(e.retryAfterSec !== undefined ? { 'retry-after': String(e.retryAfterSec) } : {}) };
}

export function errorBody(e: AppError) {
  return { error: { code: e.code, message: e.message, ...(e.details !== undefined ? { details: e.details } : {}) } };
}

/** The error as a web-standard response (runtime entry points outside the Hono app). */
export function errorJson(err: unknown): Response {
  const e = toAppError(err);
  return Response.json(errorBody(e), { status: e.status, headers: errorHeaders(e) });
}

/** A path as logs may show it: a session token in it (`/~<token>`) is a credential. */
export const redactPath = (path: string): string => path.replace(/\/~[^/]*/, '/~…');

export function errorResponse(c: Context, err: unknown, logger: Logger): Response {
  const e = toAppError(err);
  const fields = { code: e.code, status: e.status, path: redactPath(c.req.path), method: c.req.method, err: e.cause ?? e };
  if (e.status >= 500) logger.error('request failed', fields);
  else logger.debug('request rejected', fields);
  return c.json(errorBody(e), e.status as ContentfulStatusCode, errorHeaders(e));
}
