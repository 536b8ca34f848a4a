import type { V1Pod } from '@kubernetes/client-node';
import { BROWSER_CONTAINER } from './job.js';

export type PodState =
  | { kind: 'pending'; reason?: string }
  | { kind: 'running'; ip: string; node: string }
  /** `clean`: the browser container exited 0 by itself (its client closed it). */
  | { kind: 'failed'; reason: string; clean?: boolean };

const FATAL_WAITING = new Set([
  'ErrImagePull',
  'ImagePullBackOff',
  'CrashLoopBackOff',
  'CreateContainerConfigError',
  'CreateContainerError',
  'InvalidImageName',
  'ErrImageNeverPull',
]);

/** Pure: what a pod's status means for its session. `scheduleDeadlineMs` bounds time spent unschedulable. */
export function podState(pod: V1Pod, now: number, scheduleDeadlineMs: number): PodState {
  const st = pod.status ?? {};
  const statuses = st.containerStatuses ?? [];
  if (st.reason === 'DeadlineExceeded') return { kind: 'failed', reason: 'deadline exceeded' };
  for (const c of statuses) {
    const w = c.state?.waiting;
    if (w?.reason && FATAL_WAITING.has(w.reason)) return { kind: 'failed', reason: `container ${c.name}: ${w.reason}${w.message ? `: ${w.message}` : ''}` };
    const t = c.state?.terminated;
    if (t && c.name === BROWSER_CONTAINER && t.exitCode === 0) return { kind: 'failed', reason: 'closed by the client', clean: true };
    if (t) return { kind: 'failed', reason: `container ${c.name} terminated with exit code ${t.exitCode}${t.reason ? ` (${t.reason})` : ''}` };
  }
  if (st.phase === 'Failed' || st.phase === 'Succeeded') return { kind: 'failed', reason: `pod ${st.phase?.toLowerCase()}${st.message ? `: ${st.message}` : ''}` };
  const scheduled = st.conditions?.find((c) => c.type === 'PodScheduled');
  if (scheduled?.status === 'False' && scheduled.reason === 'Unschedulable') {
    const created = pod.metadata?.creationTimestamp ? new Date(pod.metadata.creationTimestamp).getTime() : now;
    if (now - created >= scheduleDeadlineMs) return { kind: 'failed', reason: `unschedulable: ${scheduled.message ?? 'no node fits'}` };
    return { kind: 'pending', reason: 'unschedulable' };
  }
  const ready = st.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
  if (ready && st.podIP) return { kind: 'running', ip: st.podIP, node: pod.spec?.nodeName ?? '' };
  return { kind: 'pending' };
}
