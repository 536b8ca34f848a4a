/**
 * Density for `npm run bench`: cold create → running (no warm pool) with 0, 10 and 20 idle sessions
 * already on the node, and the memory an idle session holds (proportional set size of its browser's
 * processes, so shared pages count once).
 */
import { readFile, readdir } from 'node:fs/promises';
import type { Spawned } from '../harness/spawn.js';
import { spawnRouterAndAgent } from './pair.js';
import { stats, type Stats } from './load.js';

export const DENSITY_LEVELS = [0, 10, 20] as const;

export type DensityFigures = { byIdle: Array<{ idle: number; createToRunning: Stats }>; pssMbPerIdleSession: number };

export async function benchDensity(opts: {
  redisUrl: string;
  routerEnv: Record<string, string>;
  token: string;
  auth: Record<string, string>;
  creates: number;
}): Promise<DensityFigures> {
  const procs: Spawned[] = [];
  const idle: string[] = [];
  try {
    const { routerUrl } = await spawnRouterAndAgent({
      ...opts,
      keyPrefix: '{bso-density}:',
      maxSessions: 50,
      nodeName: 'bench-density',
      agentEnv: { LOCAL_MAX_BROWSERS: '32' },
      procs,
    });
    const headers = { ...opts.auth, 'content-type': 'application/json' };
    const create = async () => {
      const res = await fetch(`${routerUrl}/sessions?wait=true`, { method: 'POST', headers, body: JSON.stringify({ timeout: 3600, idleTimeout: 3600 }) });
      const s = (await res.json()) as { id: string; status: string };
      if (s.status !== 'running') throw new Error(`session ${s.id} is ${s.status}`);
      return s;
    };
    const remove = (id: string) => fetch(`${routerUrl}/sessions/${id}`, { method: 'DELETE', headers: opts.auth });
    const byIdle: DensityFigures['byIdle'] = [];
    let pssMbPerIdleSession = 0;
    let baselinePssKb = 0;
    for (const level of DENSITY_LEVELS) {
      while (idle.length < level) idle.push((await create()).id);
      // Idle means idle: the sessions just started have finished starting.
      await new Promise((r) => setTimeout(r, 2000));
      // Other browsers on this machine (the bench's own long-lived session) are the baseline.
      if (level === 0) baselinePssKb = await chromiumPssKb();
      if (level === DENSITY_LEVELS.at(-1)) pssMbPerIdleSession = ((await chromiumPssKb()) - baselinePssKb) / 1024 / level;
      const samples: number[] = [];
      for (let i = 0; i < opts.creates; i++) {
        const t = performance.now();
        const s = await create();
        samples.push(performance.now() - t);
        await remove(s.id);
        await new Promise((r) => setTimeout(r, 300));
      }
      byIdle.push({ idle: level, createToRunning: stats(samples) });
    }
    await Promise.all(idle.splice(0).map(remove));
    return { byIdle, pssMbPerIdleSession };
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
  }
}

/** Proportional set size of every session browser's processes on this machine (their command lines name the profile). */
async function chromiumPssKb(): Promise<number> {
  let total = 0;
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.includes('bso-chromium-')) continue;
      const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
      total += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
    } catch {
      // gone while we looked
    }
  }
  return total;
}
