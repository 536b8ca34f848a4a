/**
 * `npm run keys -- <command>`: API keys kept (hashed) in the router's Redis (the same as `bso keys`).
 *   create --name <name> [--role user|admin]   prints the new key once, with its id
 *   list                                       id, name, role and creation time of every key
 *   revoke <id>                                the key stops working (within API_KEY_CACHE_MS)
 * Output is JSON, so scripts can use it. Reads REDIS_URL (or REDIS_HOST/…) like the router.
 */
import { parseArgs } from 'node:util';
import { readNodeEnv } from '../shared/node-env.js';
import { runKeysCommand, type KeysRequest } from '../router/auth/keys-command.js';

const USAGE = 'usage: npm run keys -- create --name <name> [--role user|admin] | list | revoke <id>';

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { name: { type: 'string' }, role: { type: 'string', default: 'user' } } });
  const [command, ...rest] = positionals;
  const requests: Record<string, KeysRequest> = {
    create: { command: 'create', name: values.name, role: values.role },
    list: { command: 'list' },
    revoke: { command: 'revoke', id: rest[0] },
  };
  const req = command !== undefined && Object.hasOwn(requests, command) ? requests[command] : undefined;
  if (!req) {
    console.error(USAGE);
    return 2;
  }
  return runKeysCommand(req, readNodeEnv(), { out: (l) => console.log(l), err: (l) => console.error(l) });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
