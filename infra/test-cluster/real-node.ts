/**
 * A test cluster with a real node: real-node-runner.ts started in a network and mount namespace of
 * its own (`unshare`), so the kubelet gets the non-loopback address it insists on and pods get
 * private-range addresses, with nothing routed out of the namespace. From outside, commands run in it
 * through `nsenter` (kubectl, ctr), and `forward()` gives a loopback port piped to any address inside
 * (a Service's, a pod's). `stop()` ends everything the cluster started, containers included, and
 * removes what it made: its folder and its pods' cgroups.
 */
import { spawn } from 'node:child_process';
import { runTool } from '../../harness/tools.js';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroupHierarchies, cgroupRootOf, type RealNodeInfo } from './real-node-shape.js';

export type RealNode = {
  dir: string;
  info: RealNodeInfo;
  /** Runs a command inside the cluster's namespaces. */
  exec(cmd: string, args: string[], opts?: { input?: string; timeoutMs?: number }): Promise<{ stdout: string; stderr: string; code: number }>;
  /** kubectl as the cluster's admin; throws with its stderr on a non-zero exit. */
  kubectl(args: string[], opts?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** containerd's CLI on the node's store (`k8s.io` namespace). */
  ctr(args: string[]): Promise<string>;
  /** A loopback port outside whose connections are piped to `host:port` inside (asked at each connection). */
  forward(target: () => { host: string; port: number }): Promise<{ port: number; close(): Promise<void> }>;
  stop(): Promise<void>;
};

export type RealNodeBinaries = { node: string; controlPlane: string };

const here = import.meta.dirname;

/** The network namespace's identity, for finding every process inside it. */
const netnsOf = (pid: number | string) => {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
};

export async function startRealNode(opts: { binaries: RealNodeBinaries; layout: string; timeoutMs: number; signal?: AbortSignal }): Promise<RealNode> {
  const dir = await mkdtemp(join(tmpdir(), 'bso-realnode-'));
  mkdirSync(join(dir, 'tmp'));
  const out = openSync(join(dir, 'runner.log'), 'a');
  // --kill-child: the runner dies with `unshare`. TMPDIR: whatever the runner makes goes in its folder.
  const holder = spawn(
    'unshare',
    [
      '--net',
      '--mount',
      '--propagation',
      'private',
      '--fork',
      '--kill-child',
      process.execPath,
      '--import',
      'tsx',
      join(here, 'real-node-runner.ts'),
      dir,
      opts.binaries.node,
      opts.binaries.controlPlane,
      opts.layout,
    ],
    { detached: true, stdio: ['ignore', out, out], cwd: join(here, '../..'), env: { ...process.env, TMPDIR: join(dir, 'tmp') } },
  );
  if (holder.pid === undefined) throw new Error('could not start unshare');
  const holderPid = holder.pid;
  const exited = new Promise<void>((resolve) => holder.once('exit', () => resolve()));
  // The namespace is known once unshare has made it: recorded so a sweep finds its processes later.
  let netns: string | undefined;
  const nsDeadline = Date.now() + 10_000;
  while (!netns || netns === netnsOf('self')) {
    if (Date.now() > nsDeadline) break;
    netns = netnsOf(holderPid);
    await new Promise((r) => setTimeout(r, 20));
  }
  // Never the host's own: a sweep kills every process of the namespace it names.
  if (netns === netnsOf('self')) netns = undefined;
  writeFileSync(join(dir, 'netns'), netns ?? '');

  const enter = (cmd: string, args: string[]) => ['--target', String(holderPid), '--net', '--mount', '--', cmd, ...args];
  const node: RealNode = {
    dir,
    info: undefined as unknown as RealNodeInfo,
    exec: async (cmd, args, o = {}) => {
      const res = await runTool('nsenter', enter(cmd, args), o.input ?? '', o.timeoutMs ?? 60_000);
      return { ...res, code: res.code ?? 1 };
    },
    async kubectl(args, o) {
      const res = await node.exec(join(opts.binaries.node, 'kubectl'), [`--kubeconfig=${node.info.adminKubeconfig}`, ...args], o);
      if (res.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${res.stderr.trim() || `exit ${res.code}`}`);
      return res.stdout;
    },
    async ctr(args) {
      const res = await node.exec(join(opts.binaries.node, 'ctr'), ['--address', join(dir, 'containerd.sock'), '--namespace', 'k8s.io', ...args]);
      if (res.code !== 0) throw new Error(`ctr ${args.join(' ')}: ${res.stderr.trim()}`);
      return res.stdout;
    },
    async forward(target) {
      const open = new Set<Socket>();
      const server: Server = createServer((client) => {
        open.add(client);
        client.once('close', () => open.delete(client));
        const { host, port } = target();
        const upstream = connect(join(dir, 'forward.sock'), () => {
          upstream.write(`${host} ${port}\n`);
          client.pipe(upstream).pipe(client);
        });
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
      });
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
      return {
        port: (server.address() as { port: number }).port,
        close: () =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            for (const socket of open) socket.destroy();
          }),
      };
    },
    async stop() {
      try {
        process.kill(holderPid, 'SIGTERM');
      } catch {
        // gone
      }
      // The runner stops its components in order; the sweep then makes sure of it.
      await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
      await sweepRealNode(dir);
    },
  };

  const deadline = Date.now() + opts.timeoutMs;
  try {
    for (;;) {
      opts.signal?.throwIfAborted();
      if (existsSync(join(dir, 'ready.json'))) break;
      if (existsSync(join(dir, 'failed.json')) || holder.exitCode !== null || Date.now() > deadline) {
        const log = await readFile(join(dir, 'runner.log'), 'utf8').catch(() => '');
        throw new Error(`the real node did not start: ${log.split('\n').slice(-30).join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    node.info = JSON.parse(readFileSync(join(dir, 'ready.json'), 'utf8')) as RealNodeInfo;
    return node;
  } catch (err) {
    await node.stop();
    throw err;
  }
}

/**
 * Every process in this cluster's cgroup root (its pods') and in its network namespace (its
 * components, containerd's shims) killed; then that cgroup root and the folder removed.
 */
export async function sweepRealNode(dir: string): Promise<void> {
  const recorded = existsSync(join(dir, 'netns')) ? readFileSync(join(dir, 'netns'), 'utf8').trim() : '';
  const netns = recorded && recorded !== netnsOf('self') ? recorded : '';
  const roots = cgroupHierarchies().map((h) => join(h, cgroupRootOf(dir)));
  for (let round = 0; round < 50; round++) {
    const pids = new Set<number>();
    for (const root of roots) for (const pid of procsUnder(root)) pids.add(pid);
    if (netns) for (const entry of readdirSync('/proc')) if (/^\d+$/.test(entry) && netnsOf(entry) === netns && Number(entry) !== process.pid) pids.add(Number(entry));
    if (!pids.size) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const root of roots) removeCgroupTree(root);
  // Overlay mounts and tmpfs went with the mount namespace; what is left is plain files.
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

function procsUnder(path: string): number[] {
  const out: number[] = [];
  try {
    for (const line of readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n')) if (line) out.push(Number(line));
    for (const entry of readdirSync(path, { withFileTypes: true })) if (entry.isDirectory()) out.push(...procsUnder(join(path, entry.name)));
  } catch {
    // gone
  }
  return out;
}

function removeCgroupTree(path: string): void {
  try {
    for (const entry of readdirSync(path, { withFileTypes: true })) if (entry.isDirectory()) removeCgroupTree(join(path, entry.name));
    rmdirSync(path);
  } catch {
    // busy or gone
  }
}
