import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ensureBinaries } from '../infra/test-cluster/control-plane.js';

/** helm and promtool as `npm test` built them (infra/test-cluster/tools.sh); missing, this fails loudly. */
export function goTools(): { helm: string; promtool: string } {
  const dir = ensureBinaries({ checkOnly: true, script: 'tools.sh' });
  return { helm: join(dir, 'helm'), promtool: join(dir, 'promtool') };
}

/** Runs a tool to its end with `input` on stdin: its exit code and output, killed if it overruns. */
export function runTool(bin: string, args: string[], input = '', timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
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
