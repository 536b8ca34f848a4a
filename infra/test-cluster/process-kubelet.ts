/**
 * A "process kubelet" for the test cluster: it registers one Ready node, renews its lease, and runs
 * the containers of pods bound to it as local processes on their own loopback address (127.1.x.y),
 * from an image → recipe table the tests own. It reports status truthfully (Ready only once the
 * readiness probe answers, terminated with the real exit code) and honours graceful deletion.
 * Images missing from the table fail to "pull" (ErrImagePull, then ImagePullBackOff), as they would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Server } from 'node:net';
import { request } from 'node:http';
import { browserUserOfThisProcess, killChromium, lookupBrowserUser, type BrowserUser, type LaunchedChromium } from '../../agent/runtime/chromium.js';
import { startBrowserContainer } from '../../agent/image/browser.js';
import { SessionOptions } from '../../shared/session.js';
import { kubeClient, KubeHttpError, type KubeAccess } from './kube-http.js';

export type ContainerRecipe =
  | { kind: 'chromium' }
  /** The real steel-browser API, built by its peer's setup.sh into `dir`, started by its start.sh as `user`
   * (an account of its own: the browser account is firewalled off loopback, where steel reaches its own
   * Chromium) in a container of its own (steel-container.sh). */
  | { kind: 'steel'; dir: string; startScript: string; user: string; chromiumPath?: string }
  | { kind: 'http-static'; body?: string }
  | { kind: 'exit'; afterMs: number; code: number }
  | { kind: 'never-ready' };

type ContainerRun = {
  name: string;
  image: string;
  port?: number;
  env: Record<string, string>;
  probe?: { path?: string; port: number };
  proc?: ChildProcess;
  /** A steel container: its folder (its root's mount point, HOME, steel's state). */
  steel?: { stateDir: string };
  chromium?: LaunchedChromium;
  forwarder?: Server;
  state: 'waiting' | 'running' | 'terminated';
  waitingReason?: string;
  waitingMessage?: string;
  ready: boolean;
  exitCode?: number;
  startedAt?: string;
  finishedAt?: string;
};

type PodRun = {
  killed?: boolean;
  uid: string;
  ns: string;
  name: string;
  ip: string;
  containers: ContainerRun[];
  startTime: string;
  deleting: boolean;
  writes: Promise<void>;
  probeTimer?: NodeJS.Timeout;
  pullTimer?: NodeJS.Timeout;
};

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

export class ProcessKubelet {
  /** Looked up once, at the first browser container. */
  private browserUser: Promise<BrowserUser | undefined> | undefined;
  private readonly kube;
  private readonly pods = new Map<string, PodRun>();
  private readonly stopping = new AbortController();
  private nextIp = 1;
  private loops: Promise<void>[] = [];
  private readonly starting = new Set<Promise<void>>();
  private leaseTimer?: NodeJS.Timeout;

  constructor(
    private readonly opts: {
      access: KubeAccess;
      nodeName: string;
      images: Record<string, ContainerRecipe>;
      chromiumPath: string;
      /** Pod addresses are 127.<block>.x.y: one block per node, so nodes on one machine never share one. */
      addressBlock?: number;
      log?: (msg: string) => void;
    },
  ) {
    this.kube = kubeClient(opts.access);
  }

  /** Registers the node and starts serving; resolves once the scheduler may place pods here. */
  async start(): Promise<void> {
    const { call } = this.kube;
    const name = this.opts.nodeName;
    try {
      await call('POST', '/api/v1/nodes', {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64' } },
      });
    } catch (err) {
      if (!(err instanceof KubeHttpError && err.status === 409)) throw err;
    }
    await this.heartbeat();
    this.leaseTimer = setInterval(() => void this.heartbeat().catch((e) => this.log(`heartbeat failed: ${e.message}`)), 10_000);
    this.loops.push(this.watchPods());
    const deadline = Date.now() + 60_000;
    for (;;) {
      const node = await call('GET', `/api/v1/nodes/${name}`);
      const taints: Array<{ key: string }> = node.spec?.taints ?? [];
      if (!taints.some((t) => t.key.startsWith('node.kubernetes.io/'))) return;
      if (Date.now() > deadline) throw new Error(`node ${name} still tainted: ${JSON.stringify(taints)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    clearInterval(this.leaseTimer);
    await Promise.allSettled(this.loops);
    // Starts in flight finish first, so what they launch is killed too.
    await Promise.allSettled([...this.starting]);
    await Promise.all([...this.pods.values()].map((p) => this.killPod(p)));
  }

  private log(msg: string): void {
    this.opts.log?.(`[kubelet ${this.opts.nodeName}] ${msg}`);
  }

  /** As a real kubelet: the node's Lease and its status are renewed independently, and a failed Lease
   * renewal is retried at once (backing off) rather than at the next interval. */
  private async heartbeat(): Promise<void> {
    const [lease, status] = await Promise.allSettled([this.renewLease(), this.reportNodeStatus()]);
    for (const r of [lease, status]) if (r.status === 'rejected') throw r.reason;
  }

  private async renewLease(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.writeLease();
      } catch (err) {
        if (attempt >= 5 || this.stopping.signal.aborted) throw err;
        await new Promise((r) => setTimeout(r, Math.min(7000, 200 * 2 ** attempt)));
      }
    }
  }

  private async reportNodeStatus(): Promise<void> {
    const { call } = this.kube;
    const name = this.opts.nodeName;
    const t = now();
    const cond = (type: string, status: string, reason: string) => ({ type, status, reason, message: reason, lastHeartbeatTime: t, lastTransitionTime: t });
    await call(
      'PATCH',
      `/api/v1/nodes/${name}/status`,
      {
        status: {
          conditions: [
            cond('Ready', 'True', 'KubeletReady'),
            cond('MemoryPressure', 'False', 'KubeletHasSufficientMemory'),
            cond('DiskPressure', 'False', 'KubeletHasNoDiskPressure'),
            cond('PIDPressure', 'False', 'KubeletHasSufficientPID'),
          ],
          capacity: { cpu: '64', memory: '256Gi', pods: '500', 'ephemeral-storage': '500Gi' },
          allocatable: { cpu: '64', memory: '256Gi', pods: '500', 'ephemeral-storage': '500Gi' },
          addresses: [
            { type: 'InternalIP', address: '127.0.0.1' },
            { type: 'Hostname', address: name },
          ],
          nodeInfo: {
            kubeletVersion: 'v1.37.2-process',
            osImage: 'process kubelet',
            operatingSystem: 'linux',
            architecture: 'amd64',
            containerRuntimeVersion: 'process://1',
            kernelVersion: '',
            kubeProxyVersion: '',
            machineID: name,
            systemUUID: name,
            bootID: name,
          },
        },
      },
      'application/strategic-merge-patch+json',
    );
  }

  private async writeLease(): Promise<void> {
    const { call } = this.kube;
    const name = this.opts.nodeName;
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name, namespace: 'kube-node-lease' },
      spec: {
        holderIdentity: name,
        leaseDurationSeconds: 40,
        renewTime: new Date()
          .toISOString()
          .replace('Z', '000Z')
          .replace(/\.(\d{6})\d*Z$/, '.$1Z'),
      },
    };
    try {
      const current = await call('GET', `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${name}`);
      await call('PUT', `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${name}`, { ...lease, metadata: current.metadata });
    } catch (err) {
      if (err instanceof KubeHttpError && err.status === 404) await call('POST', '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases', lease);
      else throw err;
    }
  }

  /** List, then watch from the list's resourceVersion; re-list when the watch ends or expires. */
  private async watchPods(): Promise<void> {
    const selector = encodeURIComponent(`spec.nodeName=${this.opts.nodeName}`);
    while (!this.stopping.signal.aborted) {
      try {
        const list = await this.kube.call('GET', `/api/v1/pods?fieldSelector=${selector}`);
        const seen = new Set<string>();
        for (const pod of list.items) {
          seen.add(pod.metadata.uid);
          this.onPod('ADDED', pod);
        }
        for (const run of [...this.pods.values()]) if (!seen.has(run.uid)) void this.killPod(run);
        await this.kube.watch(
          `/api/v1/pods?fieldSelector=${selector}&watch=1&allowWatchBookmarks=false&resourceVersion=${list.metadata.resourceVersion}`,
          (type, obj) => {
            if (type === 'ERROR') return;
            this.onPod(type, obj);
          },
          this.stopping.signal,
        );
      } catch (err) {
        if (!this.stopping.signal.aborted) this.log(`pod watch failed: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private onPod(type: string, pod: any): void {
    const uid: string = pod.metadata.uid;
    const run = this.pods.get(uid);
    if (type === 'DELETED') {
      if (run) void this.killPod(run);
      return;
    }
    if (pod.metadata.deletionTimestamp) {
      if (run && !run.deleting) void this.terminate(run, pod.metadata.deletionGracePeriodSeconds ?? 30);
      else if (!run)
        void this.kube.call('DELETE', `/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}`, { gracePeriodSeconds: 0, preconditions: { uid } }).catch(() => {});
      return;
    }
    if (!run && !this.stopping.signal.aborted && pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed') {
      const p = this.startPod(pod).finally(() => this.starting.delete(p));
      this.starting.add(p);
    }
  }

  /** Addresses are never reused: a dying pod may still hold its ports for a moment. */
  private allocateIp(): string {
    const n = this.nextIp++;
    if (n > 65_000) throw new Error('process kubelet ran out of pod addresses');
    return `127.${this.opts.addressBlock ?? 1}.${(n >> 8) & 255}.${n & 255}`;
  }

  private async startPod(pod: any): Promise<void> {
    const run: PodRun = {
      uid: pod.metadata.uid,
      ns: pod.metadata.namespace,
      name: pod.metadata.name,
      ip: this.allocateIp(),
      startTime: now(),
      deleting: false,
      writes: Promise.resolve(),
      containers: pod.spec.containers.map((c: any) => ({
        name: c.name,
        image: c.image,
        port: c.ports?.[0]?.containerPort,
        env: Object.fromEntries((c.env ?? []).filter((e: any) => typeof e.value === 'string').map((e: any) => [e.name, e.value])),
        probe: c.readinessProbe?.httpGet
          ? { path: c.readinessProbe.httpGet.path, port: c.readinessProbe.httpGet.port }
          : c.readinessProbe?.tcpSocket
            ? { port: c.readinessProbe.tcpSocket.port }
            : undefined,
        state: 'waiting',
        waitingReason: 'ContainerCreating',
        ready: false,
      })),
    };
    this.pods.set(run.uid, run);
    this.log(`starting ${run.ns}/${run.name} on ${run.ip}`);
    await Promise.all(run.containers.map((c) => this.startContainer(run, c)));
    this.pushStatus(run);
    run.probeTimer = setInterval(() => void this.probe(run), 200);
    if (run.containers.some((c) => c.waitingReason === 'ErrImagePull')) {
      run.pullTimer = setTimeout(() => {
        for (const c of run.containers) if (c.waitingReason === 'ErrImagePull') c.waitingReason = 'ImagePullBackOff';
        this.pushStatus(run);
      }, 1000);
    }
  }

  private async startContainer(run: PodRun, c: ContainerRun): Promise<void> {
    const recipe = this.opts.images[c.image];
    if (!recipe) {
      c.waitingReason = 'ErrImagePull';
      c.waitingMessage = `failed to pull image "${c.image}": not found`;
      return;
    }
    try {
      if (recipe.kind === 'chromium') {
        // A container's browser: its own port, as an unprivileged user with its sandbox on.
        const user = await (this.browserUser ??= browserUserOfThisProcess());
        // The chromium profile's contract: the session's options arrive as BSO_OPTIONS (JSON).
        const options = c.env.BSO_OPTIONS ? SessionOptions.parse(JSON.parse(c.env.BSO_OPTIONS)) : undefined;
        const started = await startBrowserContainer({
          host: run.ip,
          port: c.port ?? 9222,
          chromiumPath: this.opts.chromiumPath,
          noSandbox: false,
          user,
          options,
          timeoutMs: 30_000,
        });
        // The pod may have been deleted while the browser started.
        if (run.killed) {
          await started.stop(0);
          return;
        }
        c.chromium = started.chromium;
        c.forwarder = started.forwarder;
        void c.chromium.exited.then(({ code, signal }) => this.exited(run, c, code ?? (signal ? 137 : 1)));
      } else if (recipe.kind === 'steel') {
        await this.startSteel(run, c, recipe);
      } else {
        const script =
          recipe.kind === 'http-static'
            ? ['node', '-e', `require('http').createServer((q,s)=>s.end(${JSON.stringify(recipe.body ?? 'ui ok')})).listen(${c.port ?? 8080}, '${run.ip}')`]
            : recipe.kind === 'exit'
              ? ['sh', '-c', `sleep ${recipe.afterMs / 1000}; exit ${recipe.code}`]
              : ['sleep', '3600'];
        c.proc = spawn(script[0]!, script.slice(1), { detached: true, stdio: 'ignore' });
        c.proc.once('exit', (code, signal) => this.exited(run, c, code ?? (signal ? 137 : 1)));
      }
      c.state = 'running';
      c.waitingReason = undefined;
      c.startedAt = now();
    } catch (err) {
      c.state = 'terminated';
      c.exitCode = 128;
      c.finishedAt = now();
      c.waitingMessage = (err as Error).message;
    }
  }

  /**
   * steel as its image runs it, as near as processes get: in PID and mount namespaces of its own
   * (steel-container.sh), with its own /files, started by its peer's start.sh on the pod's address and
   * port, its URLs from the container's DOMAIN and launch flags from CHROME_ARGS. The container lives as
   * long as steel; when it ends, every process of it ends with it.
   */
  private async startSteel(run: PodRun, c: ContainerRun, recipe: Extract<ContainerRecipe, { kind: 'steel' }>): Promise<void> {
    const user = await lookupBrowserUser(recipe.user);
    const stateDir = await mkdtemp(join(tmpdir(), 'bso-steel-'));
    c.steel = { stateDir };
    // steel's account passes through to its HOME, and sees nothing else here.
    await chmod(stateDir, 0o711);
    const root = join(stateDir, 'root');
    const home = join(stateDir, 'home');
    await mkdir(root);
    await mkdir(home);
    await chown(home, user.uid, user.gid);
    if (run.killed) return;
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: home,
      BIND_HOST: run.ip,
      CHROME_EXECUTABLE_PATH: recipe.chromiumPath ?? this.opts.chromiumPath,
      ...(c.env.DOMAIN ? { PUBLIC_HOST: c.env.DOMAIN } : {}),
      ...(c.env.USE_SSL ? { USE_SSL: c.env.USE_SSL } : {}),
      ...(c.env.CHROME_ARGS ? { CHROME_EXTRA_ARGS: c.env.CHROME_ARGS } : {}),
    };
    const script = new URL('./steel-container.sh', import.meta.url).pathname;
    const args = ['--pid', '--fork', '--kill-child', '--mount-proc', '--mount', '--propagation', 'private', '--', 'sh', script, root, String(user.uid), String(user.gid)];
    const proc = spawn('unshare', [...args, recipe.startScript, recipe.dir, String(c.port ?? 3000), join(home, 'steel')], {
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
      env,
    });
    c.proc = proc;
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    proc.once('exit', (code, signal) => {
      c.waitingMessage = err.trim().split('\n').pop() || undefined;
      this.exited(run, c, code ?? (signal ? 137 : 1));
    });
  }

  private exited(run: PodRun, c: ContainerRun, code: number): void {
    if (c.state === 'terminated') return;
    c.state = 'terminated';
    c.ready = false;
    c.exitCode = code;
    c.finishedAt = now();
    c.forwarder?.close();
    this.log(`${run.ns}/${run.name} container ${c.name} exited ${code}`);
    this.pushStatus(run);
  }

  private async probe(run: PodRun): Promise<void> {
    let changed = false;
    for (const c of run.containers) {
      if (c.state !== 'running') continue;
      const ok = c.probe ? await probeOnce(run.ip, c.probe) : true;
      if (ok !== c.ready) {
        c.ready = ok;
        changed = true;
      }
    }
    if (changed) this.pushStatus(run);
  }

  private phase(run: PodRun): string {
    const cs = run.containers;
    if (cs.every((c) => c.state === 'terminated')) return cs.every((c) => c.exitCode === 0) ? 'Succeeded' : 'Failed';
    if (cs.some((c) => c.state === 'waiting')) return 'Pending';
    return 'Running';
  }

  private pushStatus(run: PodRun): void {
    // A stopped kubelet is a dead node: what its containers do as they are killed is never reported.
    if (this.stopping.signal.aborted) return;
    const t = now();
    const allReady = run.containers.every((c) => c.ready);
    const cond = (type: string, ok: boolean, reason?: string) => ({ type, status: ok ? 'True' : 'False', lastTransitionTime: t, ...(reason ? { reason } : {}) });
    const status = {
      phase: this.phase(run),
      hostIP: '127.0.0.1',
      hostIPs: [{ ip: '127.0.0.1' }],
      podIP: run.ip,
      podIPs: [{ ip: run.ip }],
      startTime: run.startTime,
      conditions: [
        cond('PodScheduled', true),
        cond('Initialized', true),
        cond('ContainersReady', allReady, allReady ? undefined : 'ContainersNotReady'),
        cond('Ready', allReady, allReady ? undefined : 'ContainersNotReady'),
      ],
      containerStatuses: run.containers.map((c) => ({
        name: c.name,
        image: c.image,
        imageID: c.state === 'waiting' && c.waitingReason !== 'ContainerCreating' ? '' : `process://${c.image}`,
        containerID: c.startedAt ? `process://${run.uid}/${c.name}` : undefined,
        ready: c.ready,
        started: c.state === 'running',
        restartCount: 0,
        state:
          c.state === 'running'
            ? { running: { startedAt: c.startedAt } }
            : c.state === 'terminated'
              ? {
                  terminated: {
                    exitCode: c.exitCode,
                    reason: c.exitCode === 0 ? 'Completed' : 'Error',
                    startedAt: c.startedAt ?? t,
                    finishedAt: c.finishedAt ?? t,
                    message: c.waitingMessage,
                  },
                }
              : { waiting: { reason: c.waitingReason, message: c.waitingMessage } },
      })),
    };
    // One write at a time per pod, in order.
    run.writes = run.writes.then(() =>
      this.kube
        .call('PATCH', `/api/v1/namespaces/${run.ns}/pods/${run.name}/status`, { status }, 'application/merge-patch+json')
        .then(() => undefined)
        .catch((err) => {
          if (!(err instanceof KubeHttpError && err.status === 404)) this.log(`status update failed: ${(err as Error).message}`);
        }),
    );
  }

  /** Graceful deletion: SIGTERM, wait up to the grace period, SIGKILL, report, then remove the pod. */
  private async terminate(run: PodRun, graceSeconds: number): Promise<void> {
    run.deleting = true;
    await this.killPod(run, Math.min(graceSeconds, 10) * 1000, false);
    this.pushStatus(run);
    await run.writes;
    await this.kube
      .call('DELETE', `/api/v1/namespaces/${run.ns}/pods/${run.name}`, { gracePeriodSeconds: 0, preconditions: { uid: run.uid } })
      .catch((err) => this.log(`final delete of ${run.name} failed: ${(err as Error).message}`));
    this.pods.delete(run.uid);
  }

  private async killPod(run: PodRun, graceMs = 2000, forget = true): Promise<void> {
    run.killed = true;
    clearInterval(run.probeTimer);
    clearTimeout(run.pullTimer);
    await Promise.all(
      run.containers.map(async (c) => {
        c.forwarder?.close();
        if (c.chromium) await killChromium(c.chromium, graceMs);
        if (c.steel) await stopSteel(c.proc, c.steel.stateDir, graceMs);
        if (c.proc && c.proc.exitCode === null && c.proc.signalCode === null) {
          const exited = new Promise((r) => c.proc!.once('exit', r));
          signalGroup(c.proc.pid, 'SIGTERM');
          const t = setTimeout(() => signalGroup(c.proc!.pid, 'SIGKILL'), graceMs);
          await exited;
          clearTimeout(t);
        }
        if (c.state !== 'terminated') {
          c.state = 'terminated';
          c.exitCode = 143;
          c.finishedAt = now();
          c.ready = false;
        }
      }),
    );
    if (forget) this.pods.delete(run.uid);
  }
}

/** SIGTERM to the container's init asks steel to stop; past the grace period the init is killed, and the kernel ends the rest of its namespace. */
async function stopSteel(proc: ChildProcess | undefined, stateDir: string, graceMs: number): Promise<void> {
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise((r) => proc.once('exit', r));
    const init = namespaceInit(proc.pid!);
    if (init) signalPid(init, 'SIGTERM');
    const timer = setTimeout(() => signalGroup(proc.pid, 'SIGKILL'), init ? graceMs : 0);
    await exited;
    clearTimeout(timer);
  }
  await rm(stateDir, { recursive: true, force: true }).catch(() => {});
}

/** The child `unshare --fork` made: the new PID namespace's init. */
function namespaceInit(unsharePid: number): number | null {
  try {
    const pid = Number(readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone
  }
}

function signalGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, sig);
  } catch {
    // gone
  }
}

function probeOnce(ip: string, probe: { path?: string; port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    if (!probe.path) {
      const s = connect(probe.port, ip);
      s.setTimeout(500, () => s.destroy());
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
      s.once('close', () => resolve(false));
      return;
    }
    const req = request({ host: ip, port: probe.port, path: probe.path, timeout: 500 }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 500) < 400);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
