import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { freePort } from '../harness/processes.js';

const run = promisify(execFile);
const TABLE = 'bso_bench_lb';

/**
 * A round-robin balancer in the kernel, as kube-proxy and cloud L4 balancers are: an nftables DNAT rule
 * on loopback sends each new connection to port `front` to the next backend, and no process relays
 * bytes. Needs root and `nft` (`npm run setup` installs it); null when either is missing. One bench at
 * a time: the table has a fixed name and is replaced whole.
 */
export async function startKernelBalancer(backendPorts: number[]): Promise<{ port: number; close(): Promise<void> } | null> {
  if (process.getuid?.() !== 0) return null;
  const port = await freePort();
  const map = backendPorts.map((p, i) => `${i} : 127.0.0.1 . ${p}`).join(', ');
  const rules = [
    `table ip ${TABLE} {}`,
    `delete table ip ${TABLE}`,
    `table ip ${TABLE} {`,
    '  chain output {',
    '    type nat hook output priority -100; policy accept;',
    `    ip daddr 127.0.0.1 tcp dport ${port} dnat to numgen inc mod ${backendPorts.length} map { ${map} }`,
    '  }',
    '}',
  ].join('\n');
  try {
    await new Promise<void>((resolve, reject) => {
      const child = execFile('nft', ['-f', '-'], { timeout: 10_000 }, (err) => (err ? reject(err) : resolve()));
      child.stdin!.end(rules);
    });
  } catch {
    return null;
  }
  return { port, close: async () => void (await run('nft', ['delete', 'table', 'ip', TABLE], { timeout: 10_000 }).catch(() => {})) };
}
