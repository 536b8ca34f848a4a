#!/usr/bin/env node
/**
 * `bso`: the router's API from a terminal. Results go to stdout (a table, or JSON with --json);
 * progress, hints and errors to stderr. Exit codes: 0 done, 1 refused or failed, 2 usage error.
 */
import { existsSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import ora from 'ora';
import { runKeysCommand } from '../router/auth/keys-command.js';
import type { Env } from '../shared/env.js';
import { readNodeEnv } from '../shared/node-env.js';
import { SESSION_STATUSES, type SessionStatus } from '../shared/session.js';
import { BsoClient, BsoError, type CreateSessionBody, type SessionView } from './index.js';
import { runDoctor } from './doctor.js';

export type CliIo = { out(text: string): void; err(text: string): void; isTTY: boolean; stderr: NodeJS.WritableStream };

const seconds = (name: string) => (value: string) => {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${name} is a whole number of seconds`);
  return Number(value);
};

const routerUrl = (value: string) => {
  if (!URL.canParse(value) || !/^https?:$/.test(new URL(value).protocol)) throw new InvalidArgumentError('an http(s) URL, like http://127.0.0.1:3000');
  return value;
};

/** Runs one command line; resolves to the exit code. */
export async function runCli(argv: string[], env: Env, io: CliIo): Promise<number> {
  let code = 0;
  const program = new Command('bso')
    .description('Browser sessions from the command line: create, list, inspect and end them.')
    .addOption(new Option('--url <url>', "the router's address (BSO_URL)").default(env.BSO_URL ?? 'http://127.0.0.1:3000', 'BSO_URL or http://127.0.0.1:3000').argParser(routerUrl))
    .addOption(new Option('--key <key>', 'an API key (BSO_API_KEY)'))
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .showHelpAfterError('(bso --help for usage)');

  const client = () => {
    const o = program.opts<{ url: string; key?: string }>();
    return new BsoClient({ url: o.url, apiKey: o.key ?? (env.BSO_API_KEY || undefined), env: {} });
  };
  const print = (value: unknown) => io.out(`${JSON.stringify(value, null, 2)}\n`);

  program
    .command('create')
    .description('create a session; with --wait, show its progress until it runs')
    .option('--wait', 'wait until the browser runs, showing progress')
    .option('--timeout <seconds>', 'hard limit of the session, from creation', seconds('--timeout'))
    .option('--idle-timeout <seconds>', 'end it after this long without traffic', seconds('--idle-timeout'))
    .option('--wait-timeout <seconds>', 'give up waiting after this long', seconds('--wait-timeout'), 120)
    .option('--queue <seconds>', 'when every slot is taken, wait in the queue this long for one', seconds('--queue'))
    .option('--cluster <id>', 'place it on this cluster')
    .option('--user-agent <ua>', "the browser's user agent")
    .option('--json', 'print the session as JSON')
    .action(async (o: { wait?: boolean; timeout?: number; idleTimeout?: number; waitTimeout: number; queue?: number; cluster?: string; userAgent?: string; json?: boolean }) => {
      const body: CreateSessionBody = {
        ...(o.timeout !== undefined ? { timeout: o.timeout } : {}),
        ...(o.idleTimeout !== undefined ? { idleTimeout: o.idleTimeout } : {}),
        ...(o.cluster ? { cluster: o.cluster } : {}),
        ...(o.userAgent ? { options: { userAgent: o.userAgent } } : {}),
      };
      const bso = client();
      const started = Date.now();
      if (o.queue !== undefined && io.isTTY) io.err(`waiting up to ${o.queue} s for a free slot…\n`);
      let session = await bso.createSession(body, o.queue !== undefined ? { queueSec: o.queue } : {});
      if (o.wait && session.status !== 'running')
        session = await withProgress(io, session, started, (onStatus) => bso.waitUntilRunning(session.id, { timeoutMs: o.waitTimeout * 1000, onStatus }));
      if (o.json) print(session);
      else io.out(`${session.id}\t${session.status}\t${session.cdpUrl}\n`);
    });

  program
    .command('ls')
    .description('list sessions, newest first')
    .addOption(new Option('--status <status>', 'only sessions with this status').choices([...SESSION_STATUSES]))
    .option('--limit <n>', 'at most this many', seconds('--limit'), 50)
    .option('--json', 'print JSON')
    .action(async (o: { status?: SessionStatus; limit: number; json?: boolean }) => {
      const rows: SessionView[] = [];
      for await (const s of client().listSessions({ status: o.status, pageSize: Math.min(o.limit, 500) })) {
        rows.push(s);
        if (rows.length >= o.limit) break;
      }
      if (o.json) return print(rows);
      io.out(
        table(
          ['ID', 'STATUS', 'CREATED', 'CLUSTER', 'NODE'],
          rows.map((s) => [s.id, s.status, new Date(s.createdAt).toISOString(), s.cluster ?? '-', s.node ?? '-']),
        ),
      );
    });

  program
    .command('status')
    .description("a session's status and health")
    .argument('<id>')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const s = await client().getStatus(id);
      if (o.json) return print(s);
      const h = s.health;
      io.out(
        `${s.id}\t${s.status}${s.failureReason ? ` (${s.failureReason})` : ''}\nexpires ${new Date(s.expiresAt).toISOString()}; agent ${h.agentConnected ? 'connected' : 'not connected'}; browser ${h.browserReachable === null ? 'not checked' : h.browserReachable ? 'reachable' : 'unreachable'}\n`,
      );
    });

  program
    .command('rm')
    .description('end sessions (their browsers are destroyed)')
    .argument('<id...>')
    .action(async (ids: string[]) => {
      const bso = client();
      for (const id of ids) {
        try {
          const s = await bso.deleteSession(id);
          io.out(`${s.id}\t${s.status}\n`);
        } catch (err) {
          if (!(err instanceof BsoError)) throw err;
          io.err(`${id}: ${err.code}: ${err.message}\n`);
          code = 1;
        }
      }
    });

  program
    .command('release')
    .description('end a session when its last client disconnects (at once if none is connected)')
    .argument('<id>')
    .action(async (id: string) => {
      const s = await client().releaseSession(id);
      io.out(`${s.id}\t${s.status}\n`);
    });

  program
    .command('connect')
    .description("print a running session's CDP URL (for Playwright's connectOverCDP, Puppeteer's connect)")
    .argument('<id>')
    .action(async (id: string) => {
      const s = await client().getSession(id);
      if (s.status !== 'running') throw new BsoError(409, 'SESSION_NOT_RUNNING', `session ${id} is ${s.status}`);
      io.out(`${s.cdpUrl}\n`);
    });

  const keys = program.command('keys').description("API keys in the router's Redis (REDIS_URL, as the router reads it)");
  const keysIo = { out: (l: string) => io.out(`${l}\n`), err: (l: string) => io.err(`${l}\n`) };
  keys
    .command('create')
    .description('make a key; it is shown once')
    .requiredOption('--name <name>', 'what the key is for')
    .addOption(new Option('--role <role>', 'what it may do').choices(['user', 'admin']).default('user'))
    .action(async (o: { name: string; role: string }) => {
      code = await runKeysCommand({ command: 'create', name: o.name, role: o.role }, env, keysIo);
    });
  keys
    .command('list')
    .description('every key (never the key itself)')
    .action(async () => {
      code = await runKeysCommand({ command: 'list' }, env, keysIo);
    });
  keys
    .command('revoke')
    .description('the key stops working')
    .argument('<id>')
    .action(async (id: string) => {
      code = await runKeysCommand({ command: 'revoke', id }, env, keysIo);
    });

  program
    .command('doctor')
    .description('check the router, the key, the agents, the store and Chromium, each with a verdict and a hint')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const checks = await runDoctor(client(), env, (path) => existsSync(path));
      if (o.json) print(checks);
      else
        io.out(
          table(
            ['', 'CHECK', 'RESULT', 'HINT'],
            checks.map((c) => [c.verdict === 'ok' ? 'ok' : c.verdict === 'warn' ? 'WARN' : 'FAIL', c.check, c.detail, c.hint ?? '']),
          ),
        );
      if (checks.some((c) => c.verdict === 'fail')) code = 1;
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof BsoError) {
      io.err(`error: ${err.code}: ${err.message}\n`);
      return 1;
    }
    io.err(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

/** A spinner with the status and elapsed time on a terminal; a plain line per change otherwise. */
async function withProgress(io: CliIo, first: SessionView, started: number, wait: (onStatus: (s: SessionView) => void) => Promise<SessionView>): Promise<SessionView> {
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
  const label = (s: SessionView) => `${s.id} ${s.status} (${elapsed()})`;
  if (io.isTTY) {
    const spinner = ora({ text: label(first), stream: io.stderr, isEnabled: true }).start();
    const ticker = setInterval(() => (spinner.text = label(first)), 100);
    try {
      const s = await wait((s) => (first = s));
      spinner.succeed(label(s));
      return s;
    } catch (err) {
      spinner.fail(`${first.id} ${err instanceof Error ? err.message : String(err)} (${elapsed()})`);
      throw err;
    } finally {
      clearInterval(ticker);
    }
  }
  let last = first.status;
  io.err(`${label(first)}\n`);
  return wait((s) => {
    if (s.status !== last) io.err(`${label(s)}\n`);
    last = s.status;
  });
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

// Run as a program (the `bso` bin is a symlink to this file), not when imported.
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  // A terminal without a width (some pseudo-terminals) cannot redraw a spinner line: plain lines there.
  const isTTY = process.stderr.isTTY === true && (process.stderr.columns ?? 0) > 0;
  const io: CliIo = { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t), isTTY, stderr: process.stderr };
  runCli(process.argv.slice(2), readNodeEnv(), io).then((code) => {
    process.exitCode = code;
  });
}
