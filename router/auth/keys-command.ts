import type { Env } from '../../shared/env.js';
import { loadKeysConfig } from '../config.js';
import { IoredisCommands } from '../store/ioredis-commands.js';
import { KeyId, KeyName, RedisKeyStore, ROLES, type Role } from './keys.js';

export type KeysRequest = { command: 'create'; name: string | undefined; role: string } | { command: 'list' } | { command: 'revoke'; id: string | undefined };

/** Where a command's lines go: `out` for results (JSON, one per line), `err` for everything else. */
export type CommandOutput = { out(line: string): void; err(line: string): void };

/**
 * Creates, lists or revokes API keys in the router's Redis (`npm run keys`, `bso keys`). Output is
 * JSON lines, so scripts can use it. Returns the exit code: 2 for bad input, as for a usage error.
 */
export async function runKeysCommand(req: KeysRequest, env: Env, io: CommandOutput): Promise<number> {
  const config = loadKeysConfig(env);
  const commands = new IoredisCommands(config.redis, { commandTimeoutMs: 5000 });
  const keys = new RedisKeyStore({ commands, keyPrefix: config.redisKeyPrefix });
  try {
    switch (req.command) {
      case 'create': {
        const name = KeyName.safeParse(req.name);
        if (!name.success) return bad(io, `--name: ${name.error.issues[0]?.message ?? 'required'}`);
        if (!ROLES.includes(req.role as Role)) return bad(io, `--role must be one of ${ROLES.join(', ')}`);
        const { key, record } = await keys.create(name.data, req.role as Role, Date.now());
        io.out(JSON.stringify({ ...record, key }));
        io.err('The key is shown only now; only its hash is stored.');
        return 0;
      }
      case 'list':
        for (const k of await keys.list()) io.out(JSON.stringify(k));
        return 0;
      case 'revoke': {
        const id = KeyId.safeParse(req.id);
        if (!id.success) return bad(io, 'revoke needs a key id (from `list`)');
        if (!(await keys.revoke(id.data))) return bad(io, `no key with id ${id.data}`);
        io.out(JSON.stringify({ revoked: id.data }));
        return 0;
      }
    }
  } finally {
    await commands.close();
  }
}

function bad(io: CommandOutput, message: string): number {
  io.err(message);
  return 2;
}
