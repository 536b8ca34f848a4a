import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ensureBinaries } from '../infra/test-cluster/control-plane.js';

/** helm and promtool as `npm test` built them (infra/test-cluster/tools.sh); missing, this fails loudly. */
export function goTools(): { helm: string; promtool: string } {
  const dir = ensureBinaries({ checkOnly: true, script: 'tools.sh' });
  return { helm: join(dir, 'helm'), promtool: join(dir, 'promtool') };
}

/** Runs a tool to its end with `input` on stdin: its exit code and output, killed if it overruns. */
export function runTool(
  bin: string,
  args: string[],
  input = '',
  timeoutMs = 60_000,
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env } });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdin.on('error', () => {});
  proc.stdin.end(input);
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    proc.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

export type K8sObject = { kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown };

const CHART = new URL('../infra/helm/browser-session-orchestrator/', import.meta.url).pathname;

/** The project's chart through helm, with helm's cache, config and data in a folder of its own (nothing in this user's home). */
export async function helmChart() {
  const { helm } = goTools();
  const home = await mkdtemp(join(tmpdir(), 'bso-helm-'));
  const env = { HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') };
  return {
    lint: () => runTool(helm, ['lint', '--strict', CHART], '', 60_000, env),
    /** `helm template` with these arguments (`--set`, ...), as objects. */
    template: async (args: string[] = []): Promise<K8sObject[]> => {
      const out = await runTool(helm, ['template', 'bso', CHART, ...args], '', 60_000, env);
      if (out.code !== 0) throw new Error(`helm template failed: ${out.stderr}`);
      return parseAllDocuments(out.stdout).flatMap((d) => (d.contents ? [d.toJS() as K8sObject] : []));
    },
    cleanup: () => rm(home, { recursive: true, force: true }),
  };
}
