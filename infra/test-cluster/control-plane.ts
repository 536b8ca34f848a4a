/**
 * A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver,
 * kube-controller-manager and kube-scheduler built from Kubernetes' own Go modules (build.sh), on free
 * ports, with generated certificates and static tokens. Every process runs in its own process group
 * and is tracked by pid in the state directory, so `stop` ends exactly what `start` began.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { join } from 'node:path';

export type ControlPlane = {
  dir: string;
  server: string;
  caFile: string;
  adminToken: string;
  adminKubeconfig: string;
  nodeToken: (node: string) => string;
  kubeconfigFor: (name: string, token: string) => string;
  pids: Record<string, number>;
};

const COMPONENT_USERS = {
  admin: { user: 'admin', groups: ['system:masters'] },
  'kube-controller-manager': { user: 'system:kube-controller-manager', groups: [] as string[] },
  'kube-scheduler': { user: 'system:kube-scheduler', groups: [] as string[] },
};

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The cached binaries' directory (the control plane's; with `script: 'node.sh'` a real node's; with `script: 'tools.sh'` helm's and
 * promtool's); builds them first unless `checkOnly` (then a missing build fails loudly).
 */
export function ensureBinaries(opts: { checkOnly?: boolean; script?: 'build.sh' | 'tools.sh' | 'node.sh' } = {}): string {
  const script = new URL(`./${opts.script ?? 'build.sh'}`, import.meta.url).pathname;
  const env = { ...process.env, ...(opts.checkOnly ? { BSO_K8S_CHECK_ONLY: '1' } : {}) };
  const out = execFileSync('bash', [script], { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24, env })
    .toString()
    .trim()
    .split('\n');
  return out[out.length - 1]!;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A throwaway CA (`ca.crt`) and a certificate it signed for a server on 127.0.0.1/localhost
 * (`<name>.crt`, `<name>.key`), made with openssl in `dir`.
 */
export function makeServerCertificate(dir: string, name: string, cn: string, extraIps: string[] = []): void {
  const sans = ['IP:127.0.0.1', ...extraIps.map((ip) => `IP:${ip}`), 'DNS:localhost', 'DNS:kubernetes.default.svc'];
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '30', '-subj', '/CN=bso-test-ca'], dir);
  signedByCa(dir, name, `/CN=${cn}`, `subjectAltName=${sans.join(',')}\nextendedKeyUsage=serverAuth`);
}

/** A key and a certificate for `subject` (`<name>.key`, `<name>.crt`) that `dir`'s CA signed, with these extensions. */
function signedByCa(dir: string, name: string, subject: string, extensions: string): void {
  writeFileSync(join(dir, `${name}.cnf`), `[ext]\n${extensions}\n`);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject], dir);
  const sign = ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '30'];
  openssl([...sign, '-extfile', `${name}.cnf`, '-extensions', 'ext'], dir);
}

function makeCerts(dir: string, extraIps: string[]): void {
  makeServerCertificate(dir, 'apiserver', 'kube-apiserver', extraIps);
  openssl(['genrsa', '-out', 'sa.key', '2048'], dir);
  openssl(['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], dir);
}

/** The apiserver's client certificate for kubelets (logs, exec), signed by the cluster CA they trust. */
function makeKubeletClientCert(dir: string): void {
  signedByCa(dir, 'kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client', 'extendedKeyUsage=clientAuth');
}

const randomToken = () => execFileSync('openssl', ['rand', '-hex', '24']).toString().trim();

function kubeconfig(server: string, caFile: string, name: string, token: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    `- name: bso`,
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority: ${caFile}`,
    'users:',
    `- name: ${name}`,
    '  user:',
    `    token: ${token}`,
    'contexts:',
    '- name: bso',
    '  context:',
    '    cluster: bso',
    `    user: ${name}`,
    '    namespace: default',
    'current-context: bso',
    '',
  ].join('\n');
}

/** Starts a daemon in a process group of its own, its output in `<dir>/<name>.log`; returns its pid. */
export function spawnComponent(dir: string, name: string, bin: string, args: string[], env?: NodeJS.ProcessEnv): number {
  const log = openSync(join(dir, `${name}.log`), 'a');
  const proc = spawn(bin, args, { detached: true, stdio: ['ignore', log, log], env });
  proc.unref();
  if (proc.pid === undefined) throw new Error(`could not start ${name}`);
  return proc.pid;
}

/** Polls `check` until it answers true (a rejection counts as no); past the deadline, fails with the log's tail. */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, logFile?: string, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const tail = logFile && existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
  throw new Error(`${what} not ready within ${timeoutMs} ms\n${tail}`);
}

function httpsOk(url: string, caFile: string, token: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { ca: readFileSync(caFile), headers: { authorization: `Bearer ${token}` }, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

export type ControlPlaneOptions = {
  dir: string;
  binDir?: string;
  nodes?: string[];
  signal?: AbortSignal;
  /**
   * Serve a real node (the default is loopback only, for process kubelets): the apiserver listens
   * and advertises on this non-loopback address, keeps the `kubernetes` Service's endpoints (pods
   * reach it at the Service's first address, 10.96.0.1, which its certificate names), reaches
   * kubelets with a client certificate, and the controller manager also runs the controllers behind
   * Deployments, DaemonSets and Services.
   */
  realNode?: { address: string };
  /** More static token users (name → Kubernetes user and groups), e.g. kube-proxy's. */
  users?: Record<string, { user: string; groups: string[] }>;
};

/** The first address of the Service range: the `kubernetes` Service's. */
export const KUBERNETES_SERVICE_IP = '10.96.0.1';
export const SERVICE_CIDR = '10.96.0.0/16';
const CONTROLLERS = [
  'job-controller',
  'ttl-after-finished-controller',
  'garbage-collector-controller',
  'serviceaccount-controller',
  'serviceaccount-token-controller',
  'root-ca-certificate-publisher-controller',
  'namespace-controller',
  'pod-garbage-collector-controller',
  'node-lifecycle-controller',
  'taint-eviction-controller',
];
const REAL_NODE_CONTROLLERS = ['deployment-controller', 'replicaset-controller', 'daemonset-controller', 'endpointslice-controller', 'endpoints-controller'];

/** `signal` aborts a start in progress: no component is spawned after it, and what started is stopped. */
export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const binDir = opts.binDir ?? ensureBinaries();
  const dir = opts.dir;
  const address = opts.realNode?.address ?? '127.0.0.1';
  mkdirSync(dir, { recursive: true });
  makeCerts(dir, opts.realNode ? [KUBERNETES_SERVICE_IP, address] : []);
  if (opts.realNode) makeKubeletClientCert(dir);
  const caFile = join(dir, 'ca.crt');
  const tokens: Record<string, string> = {};
  const lines: string[] = [];
  let uid = 1;
  for (const [name, u] of Object.entries({ ...COMPONENT_USERS, ...opts.users })) {
    tokens[name] = randomToken();
    lines.push(`${tokens[name]},${u.user},${uid++}${u.groups.length ? `,"${u.groups.join(',')}"` : ''}`);
  }
  for (const node of opts.nodes ?? ['bso-node-1']) {
    tokens[`node:${node}`] = randomToken();
    lines.push(`${tokens[`node:${node}`]},system:node:${node},${uid++},"system:nodes"`);
  }
  writeFileSync(join(dir, 'tokens.csv'), lines.join('\n') + '\n', { mode: 0o600 });

  const [etcdClient, etcdPeer, apiPort, cmPort, schedPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const pids: Record<string, number> = {};
  const savePids = () => writeFileSync(join(dir, 'pids.json'), JSON.stringify(pids));
  try {
    pids.etcd = spawnComponent(dir, 'etcd', join(binDir, 'etcd'), [
      '--name=bso',
      `--data-dir=${join(dir, 'etcd-data')}`,
      '--unsafe-no-fsync',
      `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=bso=http://127.0.0.1:${etcdPeer}`,
      '--listen-metrics-urls=',
      '--log-level=warn',
    ]);
    savePids();
    await waitUntil('etcd', async () => (await fetch(`http://127.0.0.1:${etcdClient}/health`)).ok, 30_000, join(dir, 'etcd.log'), opts.signal);
    opts.signal?.throwIfAborted();

    const server = `https://${address}:${apiPort}`;
    pids['kube-apiserver'] = spawnComponent(dir, 'kube-apiserver', join(binDir, 'kube-apiserver'), [
      `--etcd-servers=http://127.0.0.1:${etcdClient}`,
      `--bind-address=${address}`,
      `--advertise-address=${address}`,
      `--secure-port=${apiPort}`,
      `--endpoint-reconciler-type=${opts.realNode ? 'lease' : 'none'}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      ...(opts.realNode
        ? [
            `--kubelet-client-certificate=${join(dir, 'kubelet-client.crt')}`,
            `--kubelet-client-key=${join(dir, 'kubelet-client.key')}`,
            '--kubelet-preferred-address-types=InternalIP',
          ]
        : []),
      `--tls-cert-file=${join(dir, 'apiserver.crt')}`,
      `--tls-private-key-file=${join(dir, 'apiserver.key')}`,
      `--client-ca-file=${caFile}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction',
      '--service-account-issuer=https://kubernetes.default.svc',
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      `--cert-dir=${join(dir, 'apiserver-certs')}`,
      '--v=1',
    ]);
    savePids();
    await waitUntil('kube-apiserver', () => httpsOk(`${server}/readyz`, caFile, tokens.admin!), 90_000, join(dir, 'kube-apiserver.log'), opts.signal);
    opts.signal?.throwIfAborted();

    const kc = (name: string, token: string) => {
      const path = join(dir, `${name.replace(/[^a-z0-9-]/gi, '_')}.kubeconfig`);
      writeFileSync(path, kubeconfig(server, caFile, name, token), { mode: 0o600 });
      return path;
    };
    const adminKubeconfig = kc('admin', tokens.admin!);
    pids['kube-controller-manager'] = spawnComponent(dir, 'kube-controller-manager', join(binDir, 'kube-controller-manager'), [
      `--kubeconfig=${kc('kube-controller-manager', tokens['kube-controller-manager']!)}`,
      '--leader-elect=false',
      '--use-service-account-credentials=true',
      `--service-account-private-key-file=${join(dir, 'sa.key')}`,
      `--root-ca-file=${caFile}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${cmPort}`,
      `--cert-dir=${join(dir, 'cm-certs')}`,
      `--controllers=${[...CONTROLLERS, ...(opts.realNode ? REAL_NODE_CONTROLLERS : [])].join(',')}`,
      '--node-monitor-grace-period=40s',
      '--v=1',
    ]);
    pids['kube-scheduler'] = spawnComponent(dir, 'kube-scheduler', join(binDir, 'kube-scheduler'), [
      `--kubeconfig=${kc('kube-scheduler', tokens['kube-scheduler']!)}`,
      '--leader-elect=false',
      '--bind-address=127.0.0.1',
      `--secure-port=${schedPort}`,
      `--cert-dir=${join(dir, 'sched-certs')}`,
      '--v=1',
    ]);
    savePids();
    const plane: ControlPlane = {
      dir,
      server,
      caFile,
      adminToken: tokens.admin!,
      adminKubeconfig,
      nodeToken: (node) => {
        const t = tokens[`node:${node}`];
        if (!t) throw new Error(`no token for node ${node}`);
        return t;
      },
      kubeconfigFor: kc,
      pids,
    };
    writeFileSync(join(dir, 'control-plane.json'), JSON.stringify({ ...plane, tokens }));
    return plane;
  } catch (err) {
    stopControlPlane(dir);
    throw err;
  }
}

/** Ends the processes recorded in `dir` (by process group), then removes the directory. */
export function stopControlPlane(dir: string, opts: { keepDir?: boolean } = {}): void {
  const file = join(dir, 'pids.json');
  if (existsSync(file)) {
    const pids = JSON.parse(readFileSync(file, 'utf8')) as Record<string, number>;
    // Reverse start order: clients of the apiserver first, etcd last.
    const order = Object.entries(pids).reverse();
    for (const [, pid] of order) {
      try {
        process.kill(-pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && order.some(([, pid]) => alive(pid))) execFileSync('sleep', ['0.1']);
    for (const [, pid] of order) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
}
