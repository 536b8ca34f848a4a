import { readdir, readFile, readlink, utimes } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupMembers } from '../../agent/runtime/devtools.js';
import type { SessionView } from '../../shared/api.js';
import { CHROMIUM } from '../../harness/processes.js';
import { spawnEntry, type Spawned } from '../../harness/spawn.js';
import { json, startSystem, TEST_TOKEN, waitFor, type TestSystem } from '../../harness/system.js';

/** Seconds a running session may go without any agent speaking for it. */
const GRACE_SEC = 3;

/** The main Chromium processes an agent started: its children running with a profile. */
async function browsersOf(agentPid: number): Promise<number[]> {
  const out: number[] = [];
  for (const pid of (await readdir('/proc')).filter((e) => /^\d+$/.test(e)).map(Number)) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === agentPid && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).includes('--user-data-dir=')) out.push(pid);
  }
  return out;
}

describe('an agent that dies (local runtime, agent SIGKILLed)', () => {
  let sys: TestSystem;
  const agents: Spawned[] = [];
  const spawnAgent = async () => {
    const agent = spawnEntry('agent/main.ts', {
      ROUTER_URL: sys.url,
      AGENT_TOKEN: TEST_TOKEN,
      NODE_NAME: 'mortal',
      METRICS_PORT: '0',
      METRICS_HOST: '127.0.0.1',
      CHROMIUM_PATH: CHROMIUM,
      LOG_LEVEL: 'info',
    });
    agents.push(agent);
    await agent.waitForLine(/tunnel connected/, 30_000);
    return agent;
  };
  const create = async () => {
    const { status, body } = await json<SessionView>(sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
    expect(status).toBe(201);
    expect(body.status).toBe('running');
    return body;
  };
  const statusOf = async (id: string) => (await json<SessionView>(sys.fetch(`${sys.url}/sessions/${id}`))).body;

  beforeAll(async () => {
    sys = await startSystem({ agents: 0, routerEnv: { AGENT_LOST_GRACE_SEC: String(GRACE_SEC) } });
  });
  afterAll(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await sys?.close();
  });

  it('takes its browsers with it, its sessions fail as "agent lost", and the next agent clears what they left and works', async () => {
    const first = await spawnAgent();
    const sessions = [await create(), await create()];
    const browsers = await browsersOf(first.proc.pid!);
    expect(browsers).toHaveLength(2);
    const profiles = await Promise.all(browsers.map((pid) => readlink(`/proc/${pid}/cwd`)));
    for (const p of profiles) expect(p).toMatch(/\/bso-chromium-/);
    for (const pid of browsers) expect((await groupMembers(pid)).length).toBeGreaterThan(1);

    first.proc.kill('SIGKILL');
    // Their DevTools pipe closed with the agent: the browsers exit on their own, every process of them.
    await waitFor(async () => (await Promise.all(browsers.map(groupMembers))).every((m) => m.length === 0), 10_000, 'the browsers to exit');
    // Nobody speaks for the sessions any more: after the grace period they fail, freeing their slots.
    await waitFor(async () => (await Promise.all(sessions.map((s) => statusOf(s.id)))).every((s) => s.status === 'failed'), (GRACE_SEC + 15) * 1000, 'agent lost');
    for (const s of sessions) expect((await statusOf(s.id)).failureReason).toMatch(/^agent lost: no agent for node "mortal"/);

    // The profiles outlived their browsers; a restarted agent removes them once they are old enough
    // (younger ones may belong to another agent about to start a browser).
    for (const p of profiles) expect(existsSync(p)).toBe(true);
    const longAgo = new Date(Date.now() - 10 * 60_000);
    for (const p of profiles) await utimes(p, longAgo, longAgo);
    const second = await spawnAgent();
    for (const p of profiles) expect(existsSync(p)).toBe(false);
    expect(second.lines.some((l) => l.includes('removed profiles of browsers that ended with an earlier agent'))).toBe(true);
    const s = await create();
    expect((await json(sys.fetch(`${s.proxyUrl}/json/version`))).status).toBe(200);
    expect((await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }))).body.status).toBe('terminated');
    expect(await browsersOf(second.proc.pid!)).toEqual([]);
  });
});
