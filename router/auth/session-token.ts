import { base64url, bytesEqual, fromBase64url, webHmacSha256, type HmacSha256 } from '../../shared/crypto.js';
import type { Session } from '../../shared/session.js';
import { ownerOf } from '../store/types.js';

/** A verified token's claims: which key's session it opens, until when (epoch seconds). */
export type TokenClaims = { owner: string; expiresAtSec: number };

const TOKEN = /^([A-Za-z0-9_-]{1,80})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/;

/**
 * Session tokens: `<owner key id>.<expiry, epoch s>.<HMAC-SHA256>` over the session id, owner and
 * expiry. They ride in `cdpUrl`/`proxyUrl` (`?token=`) so unmodified Playwright and Puppeteer connect
 * with the URL alone. Checking one needs no store read: the signature binds it to its session id (in
 * the path) and expiry; the owner must still match the session, and the session must still run.
 * The first secret signs; every secret verifies (rotation: put the new one first, drop the old later).
 */
export class SessionTokens {
  constructor(
    private readonly secrets: readonly string[],
    private readonly hmac: HmacSha256 = webHmacSha256(),
  ) {
    if (secrets.length === 0) throw new Error('at least one session token secret is needed');
  }

  async mint(session: Session): Promise<string> {
    const owner = ownerOf(session);
    const exp = Math.ceil(session.expiresAt / 1000);
    return `${owner}.${exp}.${base64url(await this.hmac(this.secrets[0]!, message(session.id, owner, exp)))}`;
  }

  /** The claims of a token for session `sessionId` that is genuine and unexpired at `nowMs`; else null. */
  async verify(token: string, sessionId: string, nowMs: number): Promise<TokenClaims | null> {
    const m = TOKEN.exec(token);
    if (!m) return null;
    const [, owner, expText, sigText] = m as unknown as [string, string, string, string];
    const exp = Number(expText);
    const signature = fromBase64url(sigText);
    if (!signature) return null;
    let genuine = false;
    // Every secret is tried, and each comparison runs to the end: the time says nothing about the signature.
    for (const secret of this.secrets) if (bytesEqual(await this.hmac(secret, message(sessionId, owner, exp)), signature)) genuine = true;
    if (!genuine || exp * 1000 <= nowMs) return null;
    return { owner, expiresAtSec: exp };
  }
}

const message = (sessionId: string, owner: string, exp: number) => `bso-session-token/v1\n${sessionId}\n${owner}\n${exp}`;
