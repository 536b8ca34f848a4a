import { readdirSync } from 'node:fs';
import { basename, join } from 'node:path';

/** What the real-node cluster's two halves (real-node.ts outside, real-node-runner.ts inside) agree on. */

/** The node's address, on a veth interface of the cluster's own network namespace. */
export const NODE_IP = '10.77.0.1';
export const NODE_NAME = 'bso-real-node';
/** Pods' addresses, on the CNI bridge. */
export const POD_CIDR = '10.78.0.0/24';
/** Services' addresses: the control plane's range. */
export { SERVICE_CIDR } from './control-plane.js';
/** The `kube-dns` Service's address (the kubelet's clusterDNS): CoreDNS on the node behind it. */
export const DNS_SERVICE_IP = '10.96.0.10';
/** containerd's default sandbox image, built here from a static pause program. */
export const PAUSE_IMAGE = 'registry.k8s.io/pause:3.10.2';

/**
 * The cgroup, in every hierarchy, under which this cluster's kubelet puts its pods (`cgroupRoot`): its
 * folder's name, so a sweep ends exactly this cluster's containers and no other kubelet's.
 */
export const cgroupRootOf = (dir: string) => basename(dir);

/** The cgroup hierarchies mounted here (v1 controllers and the v2 `unified` one), symlinked names once. */
export function cgroupHierarchies(): string[] {
  const base = '/sys/fs/cgroup';
  const entries = readdirSync(base, { withFileTypes: true });
  // A pure v2 host mounts one hierarchy at the base itself.
  if (!entries.some((e) => e.isDirectory())) return [base];
  return entries.filter((e) => e.isDirectory()).map((e) => join(base, e.name));
}

export type RealNodeInfo = {
  nodeIp: string;
  nodeName: string;
  /** The apiserver, at the node's address (reachable inside the namespace only). */
  server: string;
  adminKubeconfig: string;
  caFile: string;
  /** redis-server over TLS on the node's address, with an ACL user of its own. */
  redis: { url: string; caFile: string };
  /** Milliseconds each step of the start took. */
  timings: Record<string, number>;
};
