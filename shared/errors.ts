/**
 * Every failure the system reports carries a stable code and an HTTP status; the router maps these to
 * responses in one place (router/http/errors.ts).
 */
export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  INVALID_JSON: 400,
  VALIDATION_FAILED: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  SESSION_NOT_FOUND: 404,
  SESSION_NOT_RUNNING: 409,
  PAYLOAD_TOO_LARGE: 413,
  CAPACITY_EXHAUSTED: 429,
  INTERNAL: 500,
  AGENT_ERROR: 502,
  BROWSER_UNREACHABLE: 502,
  AGENT_DISCONNECTED: 503,
  NO_AGENT: 503,
  STORE_UNAVAILABLE: 503,
  TIMEOUT: 504,
  SHUTTING_DOWN: 503,
} as const;
export type ErrorCode = keyof typeof ERROR_STATUS;

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: unknown;
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; details?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.details = opts.details;
  }
}


export function asErrorCode(code: string): ErrorCode {
  return code in ERROR_STATUS ? (code as ErrorCode) : 'AGENT_ERROR';
}
