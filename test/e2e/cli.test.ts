import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import { freePort, killGroup, startRedis, type RedisServer } from '../../harness/processes.js';
import { runEntry } from '../../harness/spawn.js';
import { startSystem, TEST_KEYS, type TestSystem } from '../../harness/system.js';

const CLI = 'client/cli.ts';

/** `bso` on a pseudo-terminal (util-linux `script`), as a person at a terminal runs it. */
function runOnTerminal(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<{ code: number | null; output: string }> {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  // A pseudo-terminal made without one around it has no size; a person's terminal has one.
  const command = `stty cols 100 rows 30; ${[process.execPath, '--import', 'tsx', CLI, ...args].map(quote).join(' ')}`;
  const proc = spawn('script', ['-qfec', command, '/dev/null'], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', TERM: 'xterm', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const timer = setTimeout(() => void killGroup(proc), timeoutMs);
  return new Promise((resolve) =>
    proc.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    }),
  );
}

describe('the bso CLI, spawned as a user runs it', () => {
  let sys: TestSystem;
  let redis: RedisServer;
  let env: Record<string, string>;
  const bso = (args: string[], extra: Record<string, string> = {}) => runEntry(CLI, { ...env, ...extra }, args, 60_000);

  beforeAll(async () => {
    redis = await startRedis();
    sys = await startSystem({ routerEnv: { REDIS_URL: redis.url, API_KEY_CACHE_MS: '0' } });
    env = { BSO_URL: sys.url, BSO_API_KEY: TEST_KEYS.user };
  }, 60_000);
  afterAll(async () => {
    await sys?.close();
    await redis?.stop();
  });

  it('create --wait shows progress as plain lines when not on a terminal, then ls, status, connect and rm; --json parses', async () => {
    const created = await bso(['create', '--wait', '--timeout', '120', '--json']);
    expect(created.code, created.stderr).toBe(0);
    const s = JSON.parse(created.stdout) as SessionView;
    expect(s.status).toBe('running');
    // Progress went to stderr, a line per status, each with the elapsed time; no spinner codes.
    expect(created.stderr).toMatch(new RegExp(`${s.id} (pending|running) \\(\\d+\\.\\ds\\)`));
    expect(created.stderr).not.toMatch(/\x1b\[/);

    const ls = await bso(['ls']);
    expect(ls.code).toBe(0);
    const [header, ...rows] = ls.stdout.trimEnd().split('\n');
    expect(header!.split(/\s+/)).toEqual(['ID', 'STATUS', 'CREATED', 'CLUSTER', 'NODE']);
    expect(rows.some((r) => r.startsWith(s.id) && r.includes('running'))).toBe(true);
    const lsJson = await bso(['ls', '--json', '--status', 'running']);
    expect((JSON.parse(lsJson.stdout) as SessionView[]).map((x) => x.id)).toContain(s.id);

    const status = await bso(['status', s.id, '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ id: s.id, status: 'running', health: { agentConnected: true } });
    const connect = await bso(['connect', s.id]);
    expect(connect.stdout.trim()).toBe(s.cdpUrl);

    const rm = await bso(['rm', s.id, '0'.repeat(32)]);
    expect(rm.code).toBe(1);
    expect(rm.stdout.trim()).toBe(`${s.id}\tterminated`);
    expect(rm.stderr).toContain('SESSION_NOT_FOUND');
  });

  it('create --wait on a terminal shows a spinner with the status and elapsed time', async () => {
    const run = await runOnTerminal(['create', '--wait'], env);
    expect(run.code, run.output).toBe(0);
    // ora draws with cursor codes and ends with its success mark on the running line.
    expect(run.output).toMatch(/\x1b\[/);
    expect(run.output).toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏](\x1b\[\d+m)* [a-z0-9-]+ pending \(\d+\.\ds\)/);
    const line = /✔(?:\x1b\[\d+m)* ([a-z0-9-]+) running \(\d+\.\ds\)/.exec(run.output);
    expect(line, run.output).not.toBeNull();
    expect((await bso(['rm', line![1]!])).code).toBe(0);
  });

  it('bad arguments are a usage error with exit code 2', async () => {
    for (const args of [
      ['frobnicate'],
      ['create', '--timeout', 'soon'],
      ['ls', '--status', 'sleeping'],
      ['status'],
      ['keys', 'create'],
      ['--url', 'not a url', 'ls'],
      ['--url', 'ftp://127.0.0.1', 'ls'],
    ]) {
      const run = await bso(args);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toMatch(/error/i);
    }
    expect((await bso(['--help'])).code).toBe(0);
  });

  it("keys create, list and revoke in the router's Redis; the new key works until revoked", async () => {
    const made = await bso(['keys', 'create', '--name', 'cli-test'], { REDIS_URL: redis.url });
    expect(made.code, made.stderr).toBe(0);
    const key = JSON.parse(made.stdout) as { id: string; key: string; name: string; role: string };
    expect([key.name, key.role]).toEqual(['cli-test', 'user']);
    const listed = await bso(['keys', 'list'], { REDIS_URL: redis.url });
    expect(listed.stdout).toContain(key.id);
    expect(listed.stdout).not.toContain(key.key);
    expect((await bso(['ls'], { BSO_API_KEY: key.key })).code).toBe(0);
    expect((await bso(['keys', 'revoke', key.id], { REDIS_URL: redis.url })).code).toBe(0);
    const refused = await bso(['ls'], { BSO_API_KEY: key.key });
    expect([refused.code, /UNAUTHORIZED/.test(refused.stderr)]).toEqual([1, true]);
  });

  it('doctor: every check ok on a healthy system; a stopped router and a router without agents each get the right verdict', async () => {
    const healthy = await bso(['doctor', '--json']);
    expect(healthy.code, healthy.stdout).toBe(0);
    const checks = JSON.parse(healthy.stdout) as Array<{ check: string; verdict: string; detail: string }>;
    expect(checks.map((c) => [c.check, c.verdict])).toEqual([
      ['router', 'ok'],
      ['auth', 'ok'],
      ['agents', 'ok'],
      ['store', 'ok'],
      ['chromium', 'ok'],
    ]);
    expect(checks.find((c) => c.check === 'agents')!.detail).toMatch(/^local: 1/);

    const stopped = await bso(['doctor', '--url', `http://127.0.0.1:${await freePort()}`]);
    expect(stopped.code).toBe(1);
    expect(stopped.stdout).toMatch(/FAIL\s+router\s+not reachable at .*ECONNREFUSED/);

    const badKey = await bso(['doctor', '--json'], { BSO_API_KEY: 'not-a-key-0123456789' });
    expect(JSON.parse(badKey.stdout).map((c: { verdict: string }) => c.verdict)).toEqual(['ok', 'fail', 'warn', 'warn', 'warn']);

    const lonely = await startSystem({ agents: 0 });
    try {
      const noAgent = await bso(['doctor'], { BSO_URL: lonely.url });
      expect(noAgent.code).toBe(1);
      expect(noAgent.stdout).toMatch(/FAIL\s+agents\s+no agent is connected/);
      expect(noAgent.stdout).toMatch(/ok\s+store/);
    } finally {
      await lonely.close();
    }
  });
});
