import { z } from 'zod';

export const SESSION_STATUSES = ['pending', 'running', 'terminated', 'failed', 'timed_out'] as const;
export const SessionStatus = z.enum(SESSION_STATUSES);
export type SessionStatus = z.infer<typeof SessionStatus>;

export const TERMINAL_STATUSES: ReadonlySet<SessionStatus> = new Set(['terminated', 'failed', 'timed_out']);
export const isTerminal = (s: SessionStatus): boolean => TERMINAL_STATUSES.has(s);

/** The known options, each validated: the runtimes apply them (launch flags, environment, an image's API). */
const KnownOptions = {
  userAgent: z.string().min(1).max(512).optional(),
  viewport: z.strictObject({ width: z.number().int().min(100).max(7680), height: z.number().int().min(100).max(4320) }).optional(),
  locale: z
    .string()
    .regex(/^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$/)
    .optional(),
  /** An IANA time zone (`Europe/Paris`), as the runtime's ICU knows it. */
  timezone: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$/, 'not an IANA time zone')
    .refine(isTimeZone, 'not an IANA time zone')
    .optional(),
};

/** Free-form options, all of them together, as JSON: at most this long, nested at most this deep. */
export const MAX_OPTIONS_BYTES = 16 * 1024;
export const MAX_OPTIONS_DEPTH = 8;

/**
 * Options a client may ask for: the known keys, validated, plus any other JSON keys (the
 * specification's `{"customOption": "value"}`), size- and depth-limited. Other keys are data handed
 * to the browser image (see the image profiles), never launch flags: arbitrary flags would let a
 * client turn off isolation (e.g. --remote-debugging-address).
 */
/** Names that reach an object's prototype when assigned: never an option. */
const RESERVED_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

export const SessionOptions = z
  .object(KnownOptions)
  .catchall(z.unknown())
  .superRefine((options, ctx) => {
    for (const [key, value] of Object.entries(options)) {
      if (key in KnownOptions) continue;
      if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/.test(key) || RESERVED_KEYS.has(key))
        ctx.addIssue({ code: 'custom', path: [key], message: 'an option name is a letter or _ then up to 63 letters, digits, _ . -' });
      else if (!isPlainJson(value, MAX_OPTIONS_DEPTH))
        ctx.addIssue({ code: 'custom', path: [key], message: `must be JSON (null, boolean, number, string, array, object) nested at most ${MAX_OPTIONS_DEPTH} deep` });
    }
    const bytes = new TextEncoder().encode(JSON.stringify(options)).byteLength;
    if (bytes > MAX_OPTIONS_BYTES) ctx.addIssue({ code: 'custom', path: [], message: `options are ${bytes} bytes of JSON; at most ${MAX_OPTIONS_BYTES}` });
  });
export type SessionOptions = z.infer<typeof SessionOptions>;

/** Where the agent reaches the browser; opaque to the router. */
export const SessionEndpoints = z.strictObject({
  host: z.string().min(1),
  apiPort: z.number().int().min(1).max(65535).optional(),
  uiPort: z.number().int().min(1).max(65535).optional(),
  /** The browser's own CDP endpoint on `apiPort` (`/devtools/browser/<id>`; `/` for steel), the target of the `/devtools/browser` alias. */
  browserWsPath: z.string().startsWith('/').max(256).optional(),
  /** The image profile that started it (see agent/runtime/kubernetes/profiles.ts); absent: `chromium`. */
  profile: z.enum(['chromium', 'steel']).optional(),
  /** Pages the image itself hands out, as paths under the session's proxy (steel's viewer and debugger). */
  links: z
    .strictObject({
      debug: z.string().startsWith('/').max(512).optional(),
      viewer: z.string().startsWith('/').max(512).optional(),
      websocket: z.string().startsWith('/').max(512).optional(),
    })
    .optional(),
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
  /** false: the session ends when its last client disconnects; absent (true): it waits for its idle timeout. */
  keepAlive: z.boolean().optional(),
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

function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

/** Plain JSON within `depth` levels: what survives a round trip through the store and a Job annotation unchanged. */
function isPlainJson(value: unknown, depth: number): boolean {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (depth <= 0 || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.every((v) => isPlainJson(v, depth - 1));
  if (Object.getPrototypeOf(value) !== Object.prototype) return false;
  return Object.values(value).every((v) => isPlainJson(v, depth - 1));
}
