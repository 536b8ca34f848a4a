/**
 * A typed client for the router's REST API. Types and response checks come from the same zod schemas
 * the router serves (shared/api.ts), so a client and a router of one version agree by construction.
 *
 *   const bso = new BsoClient({ url: 'http://127.0.0.1:3000' });     // key: option or BSO_API_KEY
 *   await bso.withSession({ timeout: 300 }, async (s) => {
 *     const browser = await chromium.connectOverCDP(s.cdpUrl);
 *     ...
 *   });                                                                // deleted, even on a throw
 */
import type { z } from 'zod';
import { CreateSessionBody, ErrorBody, HealthView, SessionList, SessionStatusView, SessionView } from '../shared/api.js';
import { isTerminal, type SessionStatus } from '../shared/session.js';

export type { CreateSessionBody, SessionView } from '../shared/api.js';
export type SessionStatusInfo = z.infer<typeof SessionStatusView>;
export type Health = z.infer<typeof HealthView>;

export type ClientOptions = {
  /** The router's address. Default: BSO_URL, else http://127.0.0.1:3000. */
  url?: string;
  /** An API key (sent as `Authorization: Bearer`). Default: BSO_API_KEY. */
  apiKey?: string;
  /** Each request's own deadline, on top of any `wait` it asks the router for. Default 30 s. */
  requestTimeoutMs?: number;
  /** How many times a 429 is retried after its `Retry-After`. Default 3; 0 never retries. */
  maxRetries?: number;
  /** The longest single wait a retry accepts; a longer `Retry-After` ends the retries. Default 30 s. */
  maxRetryWaitMs?: number;
  /** Where BSO_URL and BSO_API_KEY are read from. Default: `process.env` where there is one. */
  env?: Record<string, string | undefined>;
  fetch?: typeof fetch;
};

export type CallOptions = { signal?: AbortSignal };

/** A refusal by the router (its `{error: {code, message, details}}`), or no answer at all. */
export class BsoError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    /** Seconds the router asked to wait before retrying (`Retry-After`). */
    readonly retryAfterSec?: number,
  ) {
    super(message);
    this.name = 'BsoError';
  }
}

const DEFAULT_URL = 'http://127.0.0.1:3000';

export class BsoClient {
  readonly url: string;
  private readonly apiKey: string | undefined;
  private readonly requestTimeoutMs: number;
  private readonly maxRetries: number;
  private readonly maxRetryWaitMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(opts: ClientOptions = {}) {
    const env = opts.env ?? (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
    const url = new URL(opts.url ?? env.BSO_URL ?? DEFAULT_URL);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`the router's URL must be http(s): ${url.protocol}`);
    this.url = url.href.replace(/\/$/, '');
    this.apiKey = opts.apiKey ?? (env.BSO_API_KEY || undefined);
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.maxRetries = opts.maxRetries ?? 3;
    this.maxRetryWaitMs = opts.maxRetryWaitMs ?? 30_000;
    this.fetchImpl = opts.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * A new session. With `wait` the router answers once the browser is running (or failed), up to
   * `waitTimeoutSec`; without it the answer may be `pending` (see `waitUntilRunning`). With `queueSec`,
   * when every slot is taken the create waits in the router's fair queue that long (then a 429
   * `CAPACITY_EXHAUSTED`, not retried); it carries an Idempotency-Key (`idempotencyKey`, or one made
   * here), so a connection lost while waiting (a router that died) is asked again with it and keeps
   * its place, or gets the session it was given.
   */
  async createSession(
    body: CreateSessionBody = {},
    opts: CallOptions & { wait?: boolean; waitTimeoutSec?: number; queueSec?: number; idempotencyKey?: string } = {},
  ): Promise<SessionView> {
    const query = new URLSearchParams();
    if (opts.wait) query.set('wait', 'true');
    if (opts.waitTimeoutSec !== undefined) query.set('waitTimeout', String(opts.waitTimeoutSec));
    if (opts.queueSec !== undefined) query.set('queue', String(opts.queueSec));
    const extraMs = (opts.wait || opts.queueSec !== undefined ? (opts.waitTimeoutSec ?? 60) * 1000 : 0) + (opts.queueSec ?? 0) * 1000;
    // Checked here first, with the router's own schema: a bad body is the caller's error, before any request.
    const checked = CreateSessionBody.safeParse(body);
    if (!checked.success) {
      const issue = checked.error.issues[0];
      return Promise.reject(new BsoError(400, 'VALIDATION_FAILED', `invalid body: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`, { issues: checked.error.issues }));
    }
    const path = `/sessions${query.size ? `?${query}` : ''}`;
    if (opts.queueSec === undefined) return this.call('POST', path, SessionView, { body: checked.data, signal: opts.signal, extraMs });
    const headers = { 'idempotency-key': opts.idempotencyKey ?? crypto.randomUUID() };
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.call('POST', path, SessionView, { body: checked.data, signal: opts.signal, extraMs, headers, retryOn429: false });
      } catch (err) {
        // The connection broke while waiting (not the caller's abort, not an answer): the same key asks again.
        if (!(err instanceof BsoError && err.code === 'UNREACHABLE') || attempt >= this.maxRetries) throw err;
        await sleep(250 + Math.random() * 250, opts.signal);
      }
    }
  }

  getSession(id: string, opts: CallOptions = {}): Promise<SessionView> {
    return this.call('GET', `/sessions/${encodeURIComponent(id)}`, SessionView, opts);
  }

  getStatus(id: string, opts: CallOptions = {}): Promise<SessionStatusInfo> {
    return this.call('GET', `/sessions/${encodeURIComponent(id)}/status`, SessionStatusView, opts);
  }

  /** Every session the key may see, newest first, a page at a time as the iteration needs them. */
  async *listSessions(opts: CallOptions & { status?: SessionStatus; pageSize?: number } = {}): AsyncGenerator<SessionView> {
    let cursor: string | null = null;
    do {
      const query = new URLSearchParams({ limit: String(opts.pageSize ?? 50) });
      if (opts.status) query.set('status', opts.status);
      if (cursor) query.set('cursor', cursor);
      const page: z.infer<typeof SessionList> = await this.call('GET', `/sessions?${query}`, SessionList, opts);
      yield* page.items;
      cursor = page.nextCursor;
    } while (cursor);
  }

  /** Ends the session (its browser is destroyed); the answer is its final view. */
  deleteSession(id: string, opts: CallOptions = {}): Promise<SessionView> {
    return this.call('DELETE', `/sessions/${encodeURIComponent(id)}`, SessionView, opts);
  }

  /** Ends the session now if no client is connected to it, else when the last one disconnects. */
  releaseSession(id: string, opts: CallOptions = {}): Promise<SessionView> {
    return this.call('POST', `/sessions/${encodeURIComponent(id)}/release`, SessionView, opts);
  }

  health(opts: CallOptions = {}): Promise<Health> {
    return this.call('GET', '/health', HealthView, { ...opts, okStatuses: [200, 503] });
  }

  /**
   * Polls until the session runs; a session that ends instead (failed, timed out, deleted) is a
   * `BsoError` with its failure reason. `onStatus` sees every poll (for progress displays).
   */
  async waitUntilRunning(id: string, opts: CallOptions & { timeoutMs?: number; intervalMs?: number; onStatus?: (s: SessionView) => void } = {}): Promise<SessionView> {
    const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
    for (;;) {
      const s = await this.getSession(id, opts);
      opts.onStatus?.(s);
      if (s.status === 'running') return s;
      if (isTerminal(s.status))
        throw new BsoError(409, 'SESSION_NOT_RUNNING', `session ${id} ended ${s.status}${s.failureReason ? `: ${s.failureReason}` : ''}`, { status: s.status });
      if (Date.now() >= deadline) throw new BsoError(504, 'TIMEOUT', `session ${id} was still ${s.status} after ${opts.timeoutMs ?? 120_000} ms`);
      await sleep(Math.min(opts.intervalMs ?? 250, Math.max(0, deadline - Date.now())), opts.signal);
    }
  }

  /** A running session for `fn`, deleted afterwards whatever `fn` does (returns, throws or is aborted). */
  async withSession<T>(body: CreateSessionBody, fn: (session: SessionView) => Promise<T>, opts: CallOptions & { waitTimeoutSec?: number } = {}): Promise<T> {
    const created = await this.createSession(body, { wait: true, waitTimeoutSec: opts.waitTimeoutSec, signal: opts.signal });
    try {
      const session = created.status === 'running' ? created : await this.waitUntilRunning(created.id, { signal: opts.signal });
      return await fn(session);
    } finally {
      // Not the caller's signal: an aborted caller still must not leave a browser running.
      await this.deleteSession(created.id).catch((err: unknown) => {
        if (!(err instanceof BsoError && err.status === 404)) throw err;
      });
    }
  }

  private async call<S extends z.ZodType>(
    method: string,
    path: string,
    schema: S,
    opts: CallOptions & { body?: unknown; extraMs?: number; okStatuses?: number[]; headers?: Record<string, string>; retryOn429?: boolean },
  ): Promise<z.infer<S>> {
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    for (let attempt = 0; ; attempt++) {
      const timeoutMs = this.requestTimeoutMs + (opts.extraMs ?? 0);
      const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
      let res: Response;
      try {
        res = await this.fetchImpl(`${this.url}${path}`, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), signal });
      } catch (err) {
        if (opts.signal?.aborted) throw opts.signal.reason;
        const timedOut = (err as Error).name === 'TimeoutError';
        throw new BsoError(
          0,
          timedOut ? 'TIMEOUT' : 'UNREACHABLE',
          timedOut ? `${method} ${path}: no answer within ${timeoutMs} ms` : `${method} ${path}: ${(err as Error).message}`,
        );
      }
      const text = await res.text();
      if (res.ok || opts.okStatuses?.includes(res.status)) {
        const parsed = schema.safeParse(text ? JSON.parse(text) : undefined);
        if (!parsed.success)
          throw new BsoError(res.status, 'BAD_RESPONSE', `${method} ${path}: the router's answer is not what this client expects: ${parsed.error.issues[0]?.message}`);
        return parsed.data;
      }
      const error = errorOf(res, text);
      // A 429 refused the request before doing anything, so repeating it is safe.
      const waitMs = error.retryAfterSec === undefined ? undefined : error.retryAfterSec * 1000;
      if (res.status !== 429 || opts.retryOn429 === false || attempt >= this.maxRetries || waitMs === undefined || waitMs > this.maxRetryWaitMs) throw error;
      // Up to 10% more, so clients refused together do not all come back at the same instant.
      await sleep(waitMs + Math.random() * waitMs * 0.1, opts.signal);
    }
  }
}

function errorOf(res: Response, text: string): BsoError {
  const retryAfter = res.headers.get('retry-after');
  const retryAfterSec = retryAfter !== null && /^\d+$/.test(retryAfter.trim()) ? Number(retryAfter) : undefined;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const parsed = ErrorBody.safeParse(body);
  if (parsed.success) return new BsoError(res.status, parsed.data.error.code, parsed.data.error.message, parsed.data.error.details, retryAfterSec);
  return new BsoError(res.status, `HTTP_${res.status}`, `${res.status} ${res.statusText}${text ? `: ${text.slice(0, 200)}` : ''}`, undefined, retryAfterSec);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
