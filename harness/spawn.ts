import { spawn, type ChildProcess } from 'node:child_process';
import { killGroup } from './processes.js';

export type Spawned = { proc: ChildProcess; lines: string[]; stop(): Promise<void>; waitForLine(re: RegExp, timeoutMs?: number): Promise<string> };

/** Runs one of the project's entry points as its own process (group), with JSON logs captured. */
export function spawnEntry(entry: string, env: Record<string, string>, args: string[] = []): Spawned {
  const proc = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  const onData = (d: Buffer) => {
    lines.push(...d.toString().split('\n').filter(Boolean));
    waiters.forEach((w) => w());
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  return {
    proc,
    lines,
    stop: () => killGroup(proc),
    waitForLine: (re, timeoutMs = 20_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = lines.find((l) => re.test(l));
          if (hit) {
            clearTimeout(t);
            resolve(hit);
          }
        };
        const t = setTimeout(() => reject(new Error(`no line matching ${re} within ${timeoutMs} ms:\n${lines.slice(-10).join('\n')}`)), timeoutMs);
        waiters.push(check);
        check();
        proc.once('exit', (code) => {
          clearTimeout(t);
          reject(new Error(`${entry} exited with ${code} before printing ${re}:\n${lines.slice(-10).join('\n')}`));
        });
      }),
  };
}

/** Runs an entry point to completion (a CLI): its exit code and output, killed if it overruns. */
export function runEntry(entry: string, env: Record<string, string>, args: string[] = [], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => void killGroup(proc), timeoutMs);
  return new Promise((resolve) =>
    proc.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}
