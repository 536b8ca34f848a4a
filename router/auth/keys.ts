import { z } from 'zod';
import { randomBase64url, sha256Hex, stringsEqual, type Sha256Hex } from '../../shared/crypto.js';
import type { RedisCommands } from '../store/redis-commands.js';

export const ROLES = ['user', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Who a request is from: the verified key's id (sessions record it as their owner), name and role. */
export type Caller = { keyId: string; name: string; role: Role };

/** The caller of every request when AUTH_MODE is none: one principal that may manage every session. */
export const ANONYMOUS: Caller = { keyId: 'anonymous', name: 'anonymous', role: 'admin' };

export const KeyName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, 'a key name is 1–64 letters, digits, _ or -');
/** Key ids appear in Redis key names and inside session tokens (dot-separated), so no dots or colons. */
export const KeyId = z.string().regex(/^[A-Za-z0-9_-]{1,80}$/);

export const StoredKey = z.strictObject({ id: KeyId, name: KeyName, role: z.enum(ROLES), createdAt: z.number().int() });
export type StoredKey = z.infer<typeof StoredKey>;

/** A key from API_KEYS / ADMIN_API_KEYS: `name:key` pairs, comma-separated. */
export type EnvKey = { name: string; role: Role; key: string };

const MIN_KEY_CHARS = 24;

export function parseEnvKeys(text: string | undefined, role: Role): EnvKey[] {
  if (!text?.trim()) return [];
  return text.split(',').map((pair, i) => {
    const at = pair.indexOf(':');
    const name = pair.slice(0, at).trim();
    const key = pair.slice(at + 1).trim();
    if (at <= 0 || !KeyName.safeParse(name).success) throw new Error(`entry ${i + 1} is not name:key with a name of letters, digits, _ or -`);
    if (key.length < MIN_KEY_CHARS || /\s/.test(key)) throw new Error(`key "${name}" must be at least ${MIN_KEY_CHARS} characters without spaces`);
    return { name, role, key };
  });
}

/** A new key: shown once, stored only as its SHA-256. 32 random bytes, so a plain hash is enough. */
const generateKey = (): string => `bso_${randomBase64url(32)}`;
const generateKeyId = (): string => `key_${randomBase64url(9).replace(/[-_]/g, 'x')}`;

/** Where keys created at run time live (`npm run keys`); looked up by the hash of the presented key. */
export interface KeyStore {
  findByHash(hash: string): Promise<StoredKey | null>;
  create(name: string, role: Role, now: number): Promise<{ key: string; record: StoredKey }>;
  list(): Promise<StoredKey[]>;
  /** Returns false when no key has that id. */
  revoke(id: string): Promise<boolean>;
}

/** Keys in Redis: `apikey:<sha256>` → record (the lookup), and `apikeys` (id → sha256 and record) to list and revoke. */
export class RedisKeyStore implements KeyStore {
  constructor(private readonly opts: { commands: RedisCommands; keyPrefix: string }) {}

  private byHash = (hash: string) => `${this.opts.keyPrefix}apikey:${hash}`;
  private get index() {
    return `${this.opts.keyPrefix}apikeys`;
  }

  async findByHash(hash: string): Promise<StoredKey | null> {
    const data = await this.opts.commands.get(this.byHash(hash));
    if (data === null) return null;
    const parsed = StoredKey.safeParse(JSON.parse(data));
    return parsed.success ? parsed.data : null;
  }

  async create(name: string, role: Role, now: number) {
    const key = generateKey();
    const hash = await sha256Hex(key);
    const record: StoredKey = { id: generateKeyId(), name: KeyName.parse(name), role, createdAt: now };
    // Listed first: if the second write fails, `revoke` can still find and remove what was written.
    await this.opts.commands.hset(this.index, record.id, JSON.stringify({ hash, record }));
    await this.opts.commands.set(this.byHash(hash), JSON.stringify(record));
    return { key, record };
  }

  async list(): Promise<StoredKey[]> {
    const all = await this.opts.commands.hgetall(this.index);
    return Object.values(all)
      .map((v) => StoredKey.parse((JSON.parse(v) as { record: unknown }).record))
      .sort((a, b) => a.createdAt - b.createdAt);
  }

  async revoke(id: string): Promise<boolean> {
    const entry = await this.opts.commands.hget(this.index, id);
    if (entry === null) return false;
    const { hash } = JSON.parse(entry) as { hash: string };
    await this.opts.commands.del(this.byHash(hash));
    await this.opts.commands.hdel(this.index, id);
    return true;
  }
}

/** Keys from the environment, checked by comparing SHA-256 digests in constant time, every one of them. */
export class EnvKeys {
  private readonly entries: Promise<Array<{ digest: string; caller: Caller }>>;

  constructor(keys: EnvKey[], sha256: Sha256Hex) {
    this.entries = Promise.all(keys.map(async (k) => ({ digest: await sha256(k.key), caller: { keyId: `env-${k.name}`, name: k.name, role: k.role } })));
  }

  private resolved: Array<{ digest: string; caller: Caller }> | null = null;

  /** `presentedDigest`: the hex SHA-256 of the presented key. */
  async find(presentedDigest: string): Promise<Caller | null> {
    const entries = (this.resolved ??= await this.entries);
    let found: Caller | null = null;
    for (const e of entries) if (stringsEqual(e.digest, presentedDigest)) found = e.caller;
    return found;
  }
}
