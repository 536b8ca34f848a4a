import type { Clock } from '../../shared/clock.js';
import { sha256Hex as webSha256Hex, type Sha256Hex } from '../../shared/crypto.js';
import { AppError } from '../../shared/errors.js';
import type { Session } from '../../shared/session.js';
import { bearerToken, tokensEqual } from '../../shared/tunnel/handshake.js';
import type { AuthConfig } from '../config.js';
import type { RequestInfo } from '../public-url.js';
import { visibleTo } from '../sessions/service.js';
import { ownerOf } from '../store/types.js';
import { ANONYMOUS, EnvKeys, type Caller, type KeyStore } from './keys.js';
import { rateLimitHeaders, retryAfterSec, type Bucket, type RateLimiter } from './rate-limit.js';
import type { SessionTokens } from './session-token.js';
import { sessionOfHost, type SessionHosts } from '../session-hosts.js';

/** An admitted request: who it is from, and the RateLimit fields its response carries. */
export type Admission = { caller: Caller; headers: Record<string, string> };

/** A proxied request, admitted: the session it may reach, and the token the rewritten DevTools URLs carry. */
export type ProxyAdmission = { session: Session; connectToken?: string };

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const NO_HEADERS: Record<string, string> = Object.freeze({}) as Record<string, string>;
const KEY_CACHE_MAX = 10_000;

/**
 * Who may do what, for every runtime: API keys (from the environment, or stored hashed in Redis),
 * session tokens on the proxy, the Origin check, and the rate limits. The HTTP app and each runtime's
 * data plane call it; it answers with a Caller or throws the AppError to respond with.
 */
export class Access {
  private readonly envKeys: EnvKeys;
  /** Verified keys by the hex digest of the presented key, for `keyCacheMs`. */
  private readonly cache = new Map<string, { caller: Caller; until: number }>();
  private readonly origins: ReadonlySet<string>;
  private readonly sha256: Sha256Hex;

  constructor(
    private readonly deps: {
      config: AuthConfig;
      keyStore: KeyStore | null;
      tokens: SessionTokens | null;
      limiter: RateLimiter;
      clock: Clock;
      /** The runtime's fastest SHA-256 (every keyed request hashes its key once). */
      sha256?: Sha256Hex;
      /** Sessions on hosts of their own: a session host's pages may talk to that same host. */
      sessionHosts?: SessionHosts;
    },
  ) {
    this.sha256 = deps.sha256 ?? webSha256Hex;
    this.envKeys = new EnvKeys(deps.config.envKeys, this.sha256);
    this.origins = new Set(deps.config.allowedOrigins);
  }

  get keysRequired(): boolean {
    return this.deps.config.mode === 'keys';
  }

  /** A WebSocket upgrade or a state-changing request from a web page must come from an allowed origin;
   * clients that send no Origin (Playwright, Puppeteer, curl, SDKs) are not pages. */
  checkOrigin(req: RequestInfo, upgrade: boolean): void {
    const origin = req.header('origin');
    if (origin == null || (!upgrade && SAFE_METHODS.has(req.method))) return;
    if (this.sameSessionHost(req, origin)) return;
    if (!this.origins.has(origin)) throw new AppError('FORBIDDEN_ORIGIN', `requests from origin ${origin.slice(0, 200)} are not allowed (ALLOWED_ORIGINS)`);
  }

  /** A session host's own page talking to its own host (steel's UI opening its sockets): same origin, not a cross-site request. */
  private sameSessionHost(req: RequestInfo, origin: string): boolean {
    const host = req.header('host');
    if (!host || sessionOfHost(host, this.deps.sessionHosts) === null) return false;
    try {
      return new URL(origin).host === host.toLowerCase();
    } catch {
      return false;
    }
  }

  /** An API request: origin, key, and the limits of `kind` (`create` is charged to both its buckets). */
  async admit(req: RequestInfo, kind: 'api' | 'create'): Promise<Admission> {
    this.checkOrigin(req, false);
    const caller = this.keysRequired ? await this.identify(req) : ANONYMOUS;
    if (!caller) return this.refuse(req, 'an API key is required (Authorization: Bearer … or X-API-Key)');
    const { api, create } = this.deps.config.limits;
    const buckets: Bucket[] = [];
    if (api) buckets.push({ key: caller.keyId, policy: api });
    if (kind === 'create' && create) buckets.push({ key: caller.keyId, policy: create });
    return { caller, headers: await this.charge(buckets) };
  }

  /** `/metrics`: METRICS_TOKEN (for Prometheus) or an admin key. */
  async admitMetrics(req: RequestInfo): Promise<void> {
    if (!this.keysRequired) return;
    const token = bearerToken(req.header('authorization'));
    const metricsToken = this.deps.config.metricsToken;
    if (token && metricsToken && (await tokensEqual(token, metricsToken))) return;
    const caller = await this.identify(req);
    if (!caller) return this.refuse(req, 'metrics need METRICS_TOKEN or an admin key');
    if (caller.role !== 'admin') throw new AppError('UNAUTHORIZED', 'metrics need METRICS_TOKEN or an admin key');
  }

  /**
   * A proxied request (HTTP or WebSocket): the session's token (`?token=`) or the key of its owner (or
   * an admin). A bad token is 401 before any store read; another key's session is 404, as if absent.
   */
  async admitProxy(req: RequestInfo, sessionId: string, token: string | null, lookup: (id: string) => Promise<Session>, upgrade: boolean): Promise<ProxyAdmission> {
    this.checkOrigin(req, upgrade);
    if (!this.keysRequired) return { session: await lookup(sessionId) };
    // Who asks: the owner a genuine token names, or the caller of a key.
    let who: { owner: string } | { caller: Caller };
    if (token !== null) {
      const claims = await this.deps.tokens?.verify(token, sessionId, this.deps.clock.now());
      if (!claims) return this.refuse(req, 'the session token is invalid or expired');
      who = { owner: claims.owner };
    } else {
      const caller = await this.identify(req);
      if (!caller) return this.refuse(req, 'a session token (?token=) or an API key is required');
      who = { caller };
    }
    const api = this.deps.config.limits.api;
    await this.charge(api ? [{ key: 'owner' in who ? who.owner : who.caller.keyId, policy: api }] : []);
    const session = await lookup(sessionId);
    const allowed = 'caller' in who ? visibleTo(session, who.caller) : ownerOf(session) === who.owner;
    if (!allowed) throw new AppError('SESSION_NOT_FOUND', `no session with id ${sessionId}`);
    return { session, connectToken: await this.connectToken(session) };
  }

  /** The token `cdpUrl`/`proxyUrl` carry; none when keys are off. */
  connectToken(session: Session): Promise<string | undefined> {
    return this.keysRequired && this.deps.tokens ? this.deps.tokens.mint(session) : Promise.resolve(undefined);
  }

  /** The key in `Authorization: Bearer` or `X-API-Key`, verified (and cached briefly); null if none or unknown. */
  identify(req: RequestInfo): Promise<Caller | null> {
    const presented = presentedKey(req);
    if (!presented) return Promise.resolve(null);
    const hashed = this.sha256(presented);
    if (typeof hashed !== 'string') return hashed.then((hex) => this.fromCacheOrVerify(hex));
    // The hot path: a key verified moments ago, hashed synchronously, answered without awaiting anything.
    const cached = this.cache.get(hashed);
    return cached && cached.until > this.deps.clock.now() ? Promise.resolve(cached.caller) : this.fromCacheOrVerify(hashed);
  }

  private async fromCacheOrVerify(hex: string): Promise<Caller | null> {
    const now = this.deps.clock.now();
    const cached = this.cache.get(hex);
    if (cached && cached.until > now) return cached.caller;
    let caller = await this.envKeys.find(hex);
    if (!caller && this.deps.keyStore) {
      const record = await this.deps.keyStore.findByHash(hex).catch((err: unknown) => {
        throw new AppError('STORE_UNAVAILABLE', 'the key store did not answer', { cause: err });
      });
      if (record) caller = { keyId: record.id, name: record.name, role: record.role };
    }
    // Only keys that exist are cached: unknown ones are throttled per address instead.
    if (caller && this.deps.config.keyCacheMs > 0) {
      if (this.cache.size >= KEY_CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(hex, { caller, until: now + this.deps.config.keyCacheMs });
    }
    return caller;
  }

  /** No valid credential: charged to the client's address (so guessing keys is throttled), then 401. */
  private async refuse(req: RequestInfo, message: string): Promise<never> {
    const policy = this.deps.config.limits.unauthenticated;
    if (policy) await this.charge([{ key: req.clientAddress, policy }]);
    throw new AppError('UNAUTHORIZED', message);
  }

  private async charge(buckets: Bucket[]): Promise<Record<string, string>> {
    if (buckets.length === 0) return NO_HEADERS;
    const now = this.deps.clock.now();
    // Most requests of a busy key are decided from the batch this replica holds, without I/O.
    const decision =
      this.deps.limiter.takeLocal?.(buckets, now) ??
      (await this.deps.limiter.take(buckets, now).catch((err: unknown) => {
        throw new AppError('STORE_UNAVAILABLE', 'the rate limiter did not answer', { cause: err });
      }));
    const headers = rateLimitHeaders(decision);
    if (!decision.allowed) {
      const exhausted = decision.buckets.filter((b) => b.retryAfterMs > 0).map((b) => b.policy.name);
      throw new AppError('RATE_LIMITED', `rate limit reached (${exhausted.join(', ')}); retry later`, {
        details: { limits: exhausted },
        retryAfterSec: retryAfterSec(decision),
        headers,
      });
    }
    return headers;
  }
}

function presentedKey(req: RequestInfo): string | null {
  const presented = bearerToken(req.header('authorization')) ?? req.header('x-api-key')?.trim() ?? null;
  return presented && presented.length <= 512 ? presented : null;
}
