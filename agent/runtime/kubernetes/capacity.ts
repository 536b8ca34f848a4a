import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../../../shared/logger.js';
// The client's own quantity arithmetic ("250m", "512Mi"); not re-exported from its index.
import { quantityToScalar, totalForResource } from '@kubernetes/client-node/dist/util.js';
import type { Clock } from '../../../shared/clock.js';
import { withRetry } from './retry.js';

/** What one session's pod asks the scheduler for (every container's requests added up). */
export function sessionRequests(pod: V1Pod): { cpu: number; memory: number } {
  return { cpu: Number(totalForResource(pod, 'cpu').request), memory: Number(totalForResource(pod, 'memory').request) };
}

/**
 * How many sessions the node can hold: its allocatable CPU, memory and pod count against one
 * session's requests. Other workloads' requests are not subtracted (that needs every pod of the node,
 * in every namespace); the scheduler still refuses a pod that does not fit, and the session then
 * fails as unschedulable. At least 1, so that refusal (with its reason) is what a user sees.
 */
export async function nodeCapacity(
  core: Pick<CoreV1Api, 'readNode'>,
  node: string,
  perSession: { cpu: number; memory: number },
  deps: { clock: Clock; logger: Logger },
): Promise<number> {
  const allocatable = (await withRetry('read node', () => core.readNode({ name: node }), { ...deps, attempts: 3 })).status?.allocatable ?? {};
  const fits = [
    perSession.cpu > 0 ? Number(quantityToScalar(allocatable.cpu ?? '0')) / perSession.cpu : Infinity,
    perSession.memory > 0 ? Number(quantityToScalar(allocatable.memory ?? '0')) / perSession.memory : Infinity,
    Number(quantityToScalar(allocatable.pods ?? '110')),
  ];
  return Math.max(1, Math.min(100_000, Math.floor(Math.min(...fits))));
}
