/**
 * `npm run cluster:up [-- DIR]` starts the test control plane and prints where its kubeconfig is;
 * `npm run cluster:down [-- DIR]` stops it. DIR defaults to $TMPDIR/bso-test-cluster.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startControlPlane, stopControlPlane } from './control-plane.js';

const [command, dirArg] = process.argv.slice(2);
const dir = dirArg ?? join(tmpdir(), 'bso-test-cluster');
if (command === 'up') {
  const started = Date.now();
  const plane = await startControlPlane({ dir });
  console.log(JSON.stringify({ msg: 'control plane ready', ms: Date.now() - started, server: plane.server, kubeconfig: plane.adminKubeconfig, dir, pids: plane.pids }));
} else if (command === 'down') {
  stopControlPlane(dir);
  console.log(JSON.stringify({ msg: 'control plane stopped', dir }));
} else {
  console.error('usage: cli.ts up|down [DIR]');
  process.exit(2);
}
