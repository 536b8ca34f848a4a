export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
const RANK: Record<LogLevel, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, silent: 100 };

export interface Logger {
  trace(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** Errors are not JSON-serialisable by default; keep message, code and the cause chain. */
export function serializeError(err: unknown, depth = 0): unknown {
  if (!(err instanceof Error) || depth > 4) return err instanceof Error ? err.message : err;
  const out: Record<string, unknown> = { name: err.name, message: err.message };
  const code = (err as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (err.cause !== undefined) out.cause = serializeError(err.cause, depth + 1);
  return out;
}

/** JSON lines, one object per event, filtered by level. */
export function createLogger(opts: { level: LogLevel; base?: Record<string, unknown>; write?: (line: string) => void; now?: () => number }): Logger {
  const write = opts.write ?? ((line: string) => process.stdout.write(line + '\n'));
  const now = opts.now ?? Date.now;
  const min = RANK[opts.level];
  const make = (bindings: Record<string, unknown>): Logger => {
    const emit = (level: Exclude<LogLevel, 'silent'>) => (msg: string, fields?: Record<string, unknown>) => {
      if (RANK[level] < min) return;
      const rec: Record<string, unknown> = { time: new Date(now()).toISOString(), level, msg, ...bindings };
      if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = v instanceof Error ? serializeError(v) : v;
      write(JSON.stringify(rec));
    };
    return {
      trace: emit('trace'),
      debug: emit('debug'),
      info: emit('info'),
      warn: emit('warn'),
      error: emit('error'),
      child: (more) => make({ ...bindings, ...more }),
    };
  };
  return make(opts.base ?? {});
}

/**
 * A warning a peer can provoke at will (a malformed frame, a refused stream), logged at most
 * `perWindow` times per `windowMs`; the first line of the next window says how many were held back,
 * so a flood shows up as a count, not as a flood.
 */
export function rateLimitedWarn(logger: Logger, now: () => number, opts: { perWindow?: number; windowMs?: number } = {}): (msg: string, fields?: Record<string, unknown>) => void {
  const perWindow = opts.perWindow ?? 5;
  const windowMs = opts.windowMs ?? 60_000;
  let windowStart = -Infinity;
  let logged = 0;
  let suppressed = 0;
  return (msg, fields) => {
    const t = now();
    if (t - windowStart >= windowMs) {
      windowStart = t;
      logged = 0;
    }
    if (logged >= perWindow) {
      suppressed++;
      return;
    }
    logged++;
    logger.warn(msg, suppressed > 0 ? { ...fields, suppressedBefore: suppressed } : fields);
    suppressed = 0;
  };
}
