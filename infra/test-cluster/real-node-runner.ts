/**
 * The inside of a real-node test cluster (see real-node.ts, which starts this under
 * `unshare --net --mount`): in a network namespace of its own, where nothing is routed out, and a
 * mount namespace where tmpfs covers what the kubelet and containerd write outside their folders.
 * Brings up the control plane on the node's address, containerd 2 with runc and the CNI bridge, the
 * images imported into containerd's store, a real kubelet, kube-proxy, CoreDNS and a TLS
 * redis-server; writes `ready.json` (or `failed.json`) in its folder; serves `forward.sock` (each
 * connection names `host port` on its first line and is then piped there, so a test outside can
 * reach Services); and stops it all on SIGTERM.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { startRedis, type RedisServer } from '../../harness/processes.js';
import { writeOciLayout } from '../images/oci-layout.js';
import { spawnComponent, startControlPlane, stopControlPlane, waitUntil, type ControlPlane } from './control-plane.js';
import { cgroupHierarchies, cgroupRootOf, DNS_SERVICE_IP, NODE_IP, SERVICE_CIDR, NODE_NAME, PAUSE_IMAGE, POD_CIDR, type RealNodeInfo } from './real-node-shape.js';

const [dir, binDir, controlPlaneBinDir, layout] = process.argv.slice(2) as [string, string, string, string];
const log = (msg: string) => process.stdout.write(`${new Date().toISOString()} ${msg}\n`);
const timings: Record<string, number> = {};
const children: Array<{ name: string; pid: number }> = [];
let plane: ControlPlane | undefined;
let redis: RedisServer | undefined;

const sh = (cmd: string, args: string[], input?: string) =>
  execFileSync(cmd, args, { input, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], timeout: 120_000, maxBuffer: 1 << 26 }).toString();

async function timed<T>(what: string, step: () => Promise<T> | T): Promise<T> {
  const started = Date.now();
  const value = await step();
  timings[what] = Date.now() - started;
  log(`${what} in ${timings[what]} ms`);
  return value;
}

/** A component of the node, tracked so SIGTERM ends it; its log is `<dir>/<name>.log`. */
function daemon(name: string, bin: string, args: string[]): number {
  const pid = spawnComponent(dir, name, bin, args, { PATH: `${binDir}:/usr/sbin:/usr/bin:/sbin:/bin` });
  children.push({ name, pid });
  writeFileSync(join(dir, 'children.json'), JSON.stringify(children));
  return pid;
}

/** Until a synchronous check holds (a throw counts as no), with the component's log tail on failure. */
const until = (what: string, check: () => boolean, timeoutMs: number, logName: string) => waitUntil(what, async () => check(), timeoutMs, join(dir, `${logName}.log`));

const kubectl = (args: string[], input?: string) => sh(join(binDir, 'kubectl'), [`--kubeconfig=${plane!.adminKubeconfig}`, ...args], input);

/** The namespace's own network: a veth interface for the node's address, forwarding for pods, nothing routed out. */
function network(): void {
  sh('ip', ['link', 'set', 'lo', 'up']);
  // A veth pair with both ends here (this kernel has no dummy interfaces): an address, and no way out.
  sh('ip', ['link', 'add', 'bso-node0', 'type', 'veth', 'peer', 'name', 'bso-node1']);
  sh('ip', ['link', 'set', 'bso-node1', 'up']);
  sh('ip', ['addr', 'add', `${NODE_IP}/24`, 'dev', 'bso-node0']);
  sh('ip', ['link', 'set', 'bso-node0', 'up']);
  // Connections the node itself opens to a Service need a route before kube-proxy's DNAT picks the pod.
  sh('ip', ['route', 'add', SERVICE_CIDR, 'dev', 'bso-node0']);
  writeFileSync('/proc/sys/net/ipv4/ip_forward', '1');
  // Replies between pods on the bridge pass through iptables, so a Service's NAT is undone for them.
  if (existsSync('/proc/sys/net/bridge/bridge-nf-call-iptables')) writeFileSync('/proc/sys/net/bridge/bridge-nf-call-iptables', '1');
}

/** What the kubelet, containerd and the CNI plugins write outside their folders goes to tmpfs here. */
function mounts(): void {
  for (const path of ['/run', '/var/lib', '/var/log', '/opt']) sh('mount', ['-t', 'tmpfs', '-o', 'mode=755', 'tmpfs', path]);
}

function containerdConfig(): string {
  const root = join(dir, 'containerd');
  return `version = 3
root = "${root}/root"
state = "${root}/state"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "${dir}/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${PAUSE_IMAGE}"
[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE: nothing may lower oom_score_adj, so the runtime must not try.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "${dir}/cni"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "/usr/sbin/runc"
      SystemdCgroup = false
`;
}

/** Pods on one bridge; routes only to Services and the node (no default gateway, no masquerade out). */
function cniConfig(): void {
  mkdirSync(join(dir, 'cni'), { recursive: true });
  writeFileSync(
    join(dir, 'cni', '10-bso.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'bso',
      plugins: [
        {
          type: 'bridge',
          bridge: 'bso-cni0',
          isGateway: true,
          isDefaultGateway: false,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: POD_CIDR }]],
            routes: [{ dst: SERVICE_CIDR }, { dst: `${NODE_IP.replace(/\.\d+$/, '.0')}/24` }],
            dataDir: join(dir, 'cni-ipam'),
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }),
  );
}

/** `registry.k8s.io/pause` as containerd's sandbox image: the static pause program, nothing else. */
async function pauseImage(): Promise<string> {
  const rootfs = join(dir, 'pause-rootfs');
  mkdirSync(rootfs, { recursive: true });
  sh('cp', [join(binDir, 'pause'), join(rootfs, 'pause')]);
  const tar = join(dir, 'pause.tar');
  sh('tar', ['--owner=0', '--group=0', '--numeric-owner', '-C', rootfs, '-cf', tar, 'pause']);
  const out = join(dir, 'pause-layout');
  await writeOciLayout(out, [{ ref: PAUSE_IMAGE, config: { architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/pause'], User: '65535:65535' } }, layers: [tar] }]);
  return out;
}

const ctr = (args: string[]) => sh(join(binDir, 'ctr'), ['--address', join(dir, 'containerd.sock'), '--namespace', 'k8s.io', ...args]);
const importLayout = (path: string) =>
  execFileSync('bash', ['-c', `tar -C "$1" -cf - . | "$2" --address "$3" --namespace k8s.io images import -`, 'import', path, join(binDir, 'ctr'), join(dir, 'containerd.sock')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 600_000,
  });

function kubeletConfig(): string {
  const kubelet = join(dir, 'kubelet');
  mkdirSync(kubelet, { recursive: true });
  // The kubelet wants its cgroup root to exist in every hierarchy it uses.
  for (const hierarchy of cgroupHierarchies()) mkdirSync(join(hierarchy, cgroupRootOf(dir)), { recursive: true });
  writeFileSync(
    join(kubelet, 'config.yaml'),
    JSON.stringify({
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      cgroupDriver: 'cgroupfs',
      cgroupRoot: `/${cgroupRootOf(dir)}`,
      failCgroupV1: false,
      failSwapOn: false,
      containerRuntimeEndpoint: `unix://${dir}/containerd.sock`,
      address: NODE_IP,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: plane!.caFile } },
      authorization: { mode: 'Webhook' },
      clusterDNS: [DNS_SERVICE_IP],
      clusterDomain: 'cluster.local',
      resolvConf: '',
      volumePluginDir: join(kubelet, 'volume-plugins'),
      // A test machine's disk is shared with much else: never evict for it, never collect images.
      evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      serializeImagePulls: false,
      maxPods: 60,
      registerNode: true,
      nodeStatusReportFrequency: '10s',
    }),
  );
  return join(kubelet, 'config.yaml');
}

function kubeProxyConfig(): string {
  const path = join(dir, 'kube-proxy.yaml');
  writeFileSync(
    path,
    JSON.stringify({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      mode: 'iptables',
      clientConnection: { kubeconfig: plane!.kubeconfigFor('kube-proxy', tokens()['kube-proxy']!) },
      hostnameOverride: NODE_NAME,
      clusterCIDR: POD_CIDR,
      // Service traffic leaves with the node's address, so replies come back through its NAT.
      iptables: { masqueradeAll: true },
      // nf_conntrack_max is the host's, not this namespace's: leave it alone.
      conntrack: { maxPerCore: 0 },
      // The namespace's own loopback: nothing else listens there.
      healthzBindAddress: '127.0.0.1:10256',
      metricsBindAddress: '127.0.0.1:10249',
    }),
  );
  return path;
}

const tokens = (): Record<string, string> => (JSON.parse(readFileSync(join(dir, 'control-plane', 'control-plane.json'), 'utf8')) as { tokens: Record<string, string> }).tokens;

/** Cluster DNS: CoreDNS on the node, behind the `kube-dns` Service at the kubelet's clusterDNS address. */
function coreDns(): void {
  kubectl(
    ['apply', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        {
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'ClusterRole',
          metadata: { name: 'bso:coredns' },
          rules: [
            { apiGroups: [''], resources: ['services', 'namespaces', 'pods'], verbs: ['list', 'watch'] },
            { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
          ],
        },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'ClusterRoleBinding',
          metadata: { name: 'bso:coredns' },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'bso:coredns' },
          subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'bso:coredns' }],
        },
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'kube-dns', namespace: 'kube-system', labels: { 'k8s-app': 'kube-dns' } },
          spec: {
            clusterIP: DNS_SERVICE_IP,
            ports: [
              { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
              { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
            ],
          },
        },
        {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: { name: 'kube-dns-node', namespace: 'kube-system', labels: { 'kubernetes.io/service-name': 'kube-dns' } },
          addressType: 'IPv4',
          endpoints: [{ addresses: [NODE_IP], conditions: { ready: true } }],
          ports: [
            { name: 'dns', port: 53, protocol: 'UDP' },
            { name: 'dns-tcp', port: 53, protocol: 'TCP' },
          ],
        },
      ],
    }),
  );
  const corefile = join(dir, 'Corefile');
  const kubeconfig = plane!.kubeconfigFor('coredns', tokens()['coredns']!);
  writeFileSync(
    corefile,
    `.:53 {\n  errors\n  kubernetes cluster.local in-addr.arpa ip6.arpa {\n    kubeconfig ${kubeconfig} bso\n    pods insecure\n    fallthrough in-addr.arpa ip6.arpa\n  }\n  cache 5\n  loadbalance\n}\n`,
  );
  daemon('coredns', join(binDir, 'coredns'), ['-conf', corefile, '-dns.port', '53']);
}

/** Forwards each connection on forward.sock to the `host port` its first line names (inside this namespace). */
function serveForwards(): void {
  const server = createServer((client) => {
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const eol = head.indexOf(10);
      if (eol < 0) {
        if (head.length > 256) client.destroy();
        return;
      }
      client.off('data', onData);
      client.pause();
      const [host, port] = head.subarray(0, eol).toString().trim().split(' ');
      const upstream = connect(Number(port), host!, () => {
        const rest = head.subarray(eol + 1);
        if (rest.length) upstream.write(rest);
        client.pipe(upstream).pipe(client);
        client.resume();
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    };
    client.on('data', onData);
  });
  server.listen(join(dir, 'forward.sock'));
}

async function start(): Promise<RealNodeInfo> {
  await timed('network', network);
  await timed('mounts', mounts);
  plane = await timed('control plane', () =>
    startControlPlane({
      dir: join(dir, 'control-plane'),
      binDir: controlPlaneBinDir,
      nodes: [NODE_NAME],
      realNode: { address: NODE_IP },
      users: { 'kube-proxy': { user: 'system:kube-proxy', groups: [] }, coredns: { user: 'bso:coredns', groups: [] } },
    }),
  );
  await timed('containerd', async () => {
    writeFileSync(join(dir, 'containerd.toml'), containerdConfig());
    cniConfig();
    daemon('containerd', join(binDir, 'containerd'), ['--config', join(dir, 'containerd.toml')]);
    await until('containerd', () => existsSync(join(dir, 'containerd.sock')) && ctr(['version']).includes('Server'), 60_000, 'containerd');
  });
  await timed('images imported', async () => {
    importLayout(await pauseImage());
    importLayout(layout);
  });
  await timed('kubelet', async () => {
    const config = kubeletConfig();
    daemon('kubelet', join(binDir, 'kubelet'), [
      `--config=${config}`,
      `--kubeconfig=${plane!.kubeconfigFor(`node-${NODE_NAME}`, plane!.nodeToken(NODE_NAME))}`,
      `--root-dir=${join(dir, 'kubelet', 'root')}`,
      `--cert-dir=${join(dir, 'kubelet', 'pki')}`,
      `--hostname-override=${NODE_NAME}`,
      `--node-ip=${NODE_IP}`,
      '--v=1',
    ]);
    await until('node Ready', () => kubectl(['get', 'node', NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']).trim() === 'True', 120_000, 'kubelet');
  });
  await timed('kube-proxy and CoreDNS', async () => {
    daemon('kube-proxy', join(binDir, 'kube-proxy'), [`--config=${kubeProxyConfig()}`, '--v=1']);
    coreDns();
    // Both answer once they have synced: the `kubernetes` Service's rules, a Service name.
    await until('kube-proxy rules', () => sh('iptables-save', ['-t', 'nat']).includes('KUBE-SVC-'), 60_000, 'kube-proxy');
    await until('CoreDNS', () => sh('bash', ['-c', `exec 3<>/dev/tcp/${NODE_IP}/53`]) === '', 60_000, 'coredns');
  });
  // The router's own ACL user, as router.yaml's Secret describes it; `default` is off.
  const aclUser = { name: 'bso-router', password: randomBytes(18).toString('hex'), rules: '~{bso}* &* +@all -@dangerous -@admin' };
  redis = await timed('redis', () => startRedis({ tls: true, host: NODE_IP, aclUser }));
  serveForwards();
  return {
    nodeIp: NODE_IP,
    nodeName: NODE_NAME,
    server: plane.server,
    adminKubeconfig: plane.adminKubeconfig,
    caFile: plane.caFile,
    redis: { url: redis.url, caFile: redis.caFile! },
    timings,
  };
}

async function stop(): Promise<void> {
  await redis?.stop().catch(() => {});
  for (const child of [...children].reverse()) {
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      // gone
    }
  }
  await new Promise((r) => setTimeout(r, 1000));
  for (const child of children) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  if (plane) stopControlPlane(plane.dir, { keepDir: true });
}

process.once('SIGTERM', () => void stop().finally(() => process.exit(0)));
start().then(
  (info) => writeFileSync(join(dir, 'ready.json'), JSON.stringify(info)),
  async (err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    writeFileSync(join(dir, 'failed.json'), JSON.stringify({ error: err instanceof Error ? err.message : String(err) }));
    await stop();
    process.exit(1);
  },
);
