/** Web Crypto helpers that behave the same on Node and on Workers. */
const encoder = new TextEncoder();

export async function sha256(data: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(data)));
}

/** SHA-256 in hex as a runtime provides it: Web Crypto everywhere (async, ~40 µs on Node's thread
 * pool), or a synchronous one where the runtime has it (Node's `crypto.hash`, ~1 µs), for per-request use. */
export type Sha256Hex = (data: string) => string | Promise<string>;

/** Equal-length strings compared without an early exit (hex digests). */
export function stringsEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** HMAC-SHA256 likewise: Web Crypto by default, the runtime's synchronous one where it has it. */
export type HmacSha256 = (secret: string, message: string) => Uint8Array | Promise<Uint8Array>;

/** Web Crypto's HMAC, with the imported key kept per secret. */
export function webHmacSha256(): HmacSha256 {
  const keys = new Map<string, Promise<CryptoKey>>();
  return async (secret, message) => {
    let key = keys.get(secret);
    if (!key) keys.set(secret, (key = hmacKey(secret, 'sign')));
    return hmacSign(await key, message);
  };
}

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));
/** Hex of a byte string; table-driven, as it runs once per keyed request. */
function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += HEX[b];
  return s;
}

export async function sha256Hex(data: string): Promise<string> {
  return toHex(await sha256(data));
}

/** Equal-length byte strings compared without an early exit. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export function base64url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromBase64url(text: string): Uint8Array<ArrayBuffer> | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  const bin = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

export function randomBase64url(bytes: number): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

const hmacKey = (secret: string, usage: 'sign' | 'verify'): Promise<CryptoKey> =>
  crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, [usage]);

async function hmacSign(key: CryptoKey, message: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign('HMAC', key, encoder.encode(message)));
}
