/**
 * `npm run keys -- <command>`: API keys kept (hashed) in the router's Redis.
 *   create --name <name> [--role user|admin]   prints the new key once, with its id
 *   list                                       id, name, role and creation time of every key
 *   revoke <id>                                the key stops working (within API_KEY_CACHE_MS)
 * Output is JSON, so scripts can use it. Reads REDIS_URL (or REDIS_HOST/…) like the router.
 */
import { parseArgs } from 'node:util';
import { readNodeEnv } from '../shared/node-env.js';
import { KeyId, KeyName, RedisKeyStore, ROLES, type Role } from '../router/auth/keys.js';
import { loadKeysConfig } from '../router/config.js';
import { IoredisCommands } from '../router/store/ioredis-commands.js';

const USAGE = 'usage: npm run keys -- create --name <name> [--role user|admin] | list | revoke <id>';

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { name: { type: 'string' }, role: { type: 'string', default: 'user' } } });
  const [command, ...rest] = positionals;
  const config = loadKeysConfig(readNodeEnv());
  const commands = new IoredisCommands(config.redis, { commandTimeoutMs: 5000 });
  const keys = new RedisKeyStore({ commands, keyPrefix: config.redisKeyPrefix });
  try {
    switch (command) {
      case 'create': {
        const name = KeyName.safeParse(values.name);
        if (!name.success) return fail(`--name: ${name.error.issues[0]?.message ?? 'required'}`);
        if (!ROLES.includes(values.role as Role)) return fail(`--role must be one of ${ROLES.join(', ')}`);
        const { key, record } = await keys.create(name.data, values.role as Role, Date.now());
        console.log(JSON.stringify({ ...record, key }));
        console.error('The key is shown only now; only its hash is stored.');
        return 0;
      }
      case 'list':
        for (const k of await keys.list()) console.log(JSON.stringify(k));
        return 0;
      case 'revoke': {
        const id = KeyId.safeParse(rest[0]);
        if (!id.success) return fail('revoke needs a key id (from `list`)');
        if (!(await keys.revoke(id.data))) return fail(`no key with id ${id.data}`);
        console.log(JSON.stringify({ revoked: id.data }));
        return 0;
      }
      default:
        return fail(USAGE);
    }
  } finally {
    await commands.close();
  }
}

function fail(message: string): number {
  console.error(message);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
