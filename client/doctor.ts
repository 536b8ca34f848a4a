import type { Env } from '../shared/env.js';
import { BsoClient, BsoError, type Health } from './index.js';

export type Verdict = 'ok' | 'warn' | 'fail';
export type Check = { check: string; verdict: Verdict; detail: string; hint?: string };

const DEFAULT_CHROMIUM = '/usr/bin/chromium';

/**
 * What `bso doctor` looks at, in order, each with a verdict and (when not ok) what to do. A check that
 * needs an earlier one to pass is reported as skipped (a warning), not guessed.
 */
export async function runDoctor(client: BsoClient, env: Env, fileExists: (path: string) => boolean): Promise<Check[]> {
  const checks: Check[] = [];
  const skip = (check: string, because: string) => checks.push({ check, verdict: 'warn', detail: `skipped: ${because}` });

  const reachable = await fetch(`${client.url}/livez`, { signal: AbortSignal.timeout(5000) }).then(
    (r) => (r.ok ? null : `answered ${r.status}`),
    (err: Error) => (err.name === 'TimeoutError' ? 'no answer within 5 s' : ((err.cause as Error | undefined)?.message ?? err.message)),
  );
  if (reachable !== null) {
    checks.push({ check: 'router', verdict: 'fail', detail: `not reachable at ${client.url}: ${reachable}`, hint: 'start it (`npm start`), or point --url / BSO_URL at it' });
    for (const c of ['auth', 'agents', 'store', 'chromium']) skip(c, 'the router is not reachable');
    return checks;
  }
  checks.push({ check: 'router', verdict: 'ok', detail: `reachable at ${client.url}` });

  let health: Health;
  try {
    health = await client.health({ signal: AbortSignal.timeout(10_000) });
    checks.push({ check: 'auth', verdict: 'ok', detail: 'the key is accepted' });
  } catch (err) {
    const refused = err instanceof BsoError && err.status === 401;
    checks.push({
      check: 'auth',
      verdict: 'fail',
      detail: refused ? `refused: ${err.message}` : `GET /health failed: ${(err as Error).message}`,
      hint: refused ? 'pass --key or set BSO_API_KEY (an admin makes one with `bso keys create --name <name>`)' : undefined,
    });
    for (const c of ['agents', 'store', 'chromium']) skip(c, refused ? 'the key is refused' : '/health did not answer');
    return checks;
  }

  const byCluster = new Map<string, string[]>();
  for (const a of health.agents) byCluster.set(a.cluster, [...(byCluster.get(a.cluster) ?? []), `${a.node} (${a.runtime})`]);
  checks.push(
    byCluster.size
      ? { check: 'agents', verdict: 'ok', detail: [...byCluster].map(([cluster, nodes]) => `${cluster}: ${nodes.length} (${nodes.join(', ')})`).join('; ') }
      : {
          check: 'agents',
          verdict: 'fail',
          detail: 'no agent is connected: sessions cannot start (503 NO_AGENT)',
          hint: "start an agent with the router's AGENT_TOKEN and ROUTER_URL; its log says why it cannot connect",
        },
  );

  checks.push(
    health.store.ok
      ? { check: 'store', verdict: 'ok', detail: `answers in ${health.store.latencyMs} ms` }
      : {
          check: 'store',
          verdict: 'fail',
          detail: `not answering: ${health.store.error ?? 'unknown'}`,
          hint: "check REDIS_URL and that Redis is up (the router's log names the error)",
        },
  );

  const chromium = env.CHROMIUM_PATH ?? DEFAULT_CHROMIUM;
  const local = health.agents.some((a) => a.runtime === 'local');
  if (!local) skip('chromium', 'no agent here runs the local runtime');
  else if (fileExists(chromium)) checks.push({ check: 'chromium', verdict: 'ok', detail: `${chromium} is present for the local runtime` });
  // The agent may run on another machine, where Chromium may well be: a warning, not a failure.
  else
    checks.push({
      check: 'chromium',
      verdict: 'warn',
      detail: `${chromium} is missing on this machine, and an agent runs the local runtime`,
      hint: 'install the Debian package chromium, or set CHROMIUM_PATH',
    });
  return checks;
}
