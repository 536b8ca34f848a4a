import type { V1EnvVar, V1Job } from '@kubernetes/client-node';
import type { Session } from '../../../shared/session.js';
import type { StartContext } from '../types.js';
import { imageProfile, type ProfileName } from './profiles.js';

export const APP_LABEL = 'bso-browser';
export const LABEL_SESSION = 'bso.dev/session-id';
export const LABEL_CLUSTER = 'bso.dev/cluster';
/** The node whose agent owns the session: its pod runs there, and only that agent watches and adopts it. */
export const LABEL_NODE = 'bso.dev/node';
export const ANNOTATION_SESSION = 'bso.dev/session';
/** The creating client's W3C `traceparent`, when it sent one: the Job joins the create's trace. */
export const ANNOTATION_TRACEPARENT = 'bso.dev/traceparent';
export const BROWSER_CONTAINER = 'browser';
export const UI_CONTAINER = 'ui';

export type JobSettings = {
  namespace: string;
  /** The cluster id this agent serves; its Jobs carry it, and it only watches and adopts those. */
  cluster: string;
  /** The node this agent runs on and owns: its Jobs' pods are pinned there. */
  node: string;
  apiImage: string;
  uiImage: string;
  apiPort: number;
  uiPort: number;
  jobTtlSeconds: number;
  /** How to talk to the images (see profiles.ts). */
  profile: ProfileName;
  /** The browser container's. */
  resources: ContainerResources;
  /** The UI container's own, small: the browser's would double each pod's size. */
  uiResources: ContainerResources;
  /** The non-root uid (and gid) the session's containers run as. */
  runAsUser: number;
};

export type ContainerResources = {
  cpuRequest: string;
  cpuLimit: string;
  memoryRequest: string;
  memoryLimit: string;
  ephemeralStorageRequest: string;
  ephemeralStorageLimit: string;
};

/** Where the containers may write (the root filesystem is read-only): each an `emptyDir`, gone with the pod. */
const WRITABLE_PATHS = { tmp: '/tmp', home: '/home/browser', shm: '/dev/shm' } as const;

export const jobName = (sessionId: string) => `bso-${sessionId}`.slice(0, 63).replace(/-+$/, '');

/**
 * One Job per session: the browser API container and the UI container, never restarted, with a
 * deadline from the session's timeout and a TTL after it finishes, so the cluster cleans up even
 * when every agent is gone. The annotation holds enough of the session to rebuild it.
 */
export function buildJob(session: Session, s: JobSettings, ctx: StartContext = {}): V1Job {
  const labels = { app: APP_LABEL, [LABEL_SESSION]: session.id, [LABEL_CLUSTER]: session.cluster, [LABEL_NODE]: s.node };
  const profile = imageProfile(s.profile);
  const podContext = { apiPort: s.apiPort, publicUrl: ctx.publicUrl, sessionUrl: ctx.sessionUrl };
  // Pod Security `restricted`, and then some: a session's user drives the browser, so the pod is
  // treated as hostile: no API token, no Service addresses in its environment, no root, no
  // capabilities, nothing writable but its own emptyDirs (counted against its ephemeral storage).
  const securityContext = { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } };
  const writable: Record<string, string> = { ...WRITABLE_PATHS, ...profile.writablePaths };
  const mounts = (paths: Record<string, string>) => Object.entries(paths).map(([name, mountPath]) => ({ name, mountPath }));
  const env = (extra: V1EnvVar[]) => [{ name: 'HOME', value: WRITABLE_PATHS.home }, ...extra];
  const { endpoints: _endpoints, ...snapshot } = session;
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: jobName(session.id),
      namespace: s.namespace,
      labels,
      annotations: { [ANNOTATION_SESSION]: JSON.stringify(snapshot), ...(ctx.traceparent ? { [ANNOTATION_TRACEPARENT]: ctx.traceparent } : {}) },
    },
    spec: {
      backoffLimit: 0,
      // The agent ends the session at its timeout; the Job's own deadline is the backstop.
      activeDeadlineSeconds: session.timeout + 30,
      ttlSecondsAfterFinished: s.jobTtlSeconds,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          terminationGracePeriodSeconds: 5,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          // On the agent's own node (CDP traffic stays on the node), still through the scheduler, which
          // checks the node's room: required affinity on the node's name, not a bare nodeName.
          affinity: {
            nodeAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [s.node] }] }] },
            },
          },
          securityContext: { runAsNonRoot: true, runAsUser: s.runAsUser, runAsGroup: s.runAsUser, fsGroup: s.runAsUser, seccompProfile: { type: 'RuntimeDefault' } },
          volumes: [
            ...Object.keys(writable)
              .filter((name) => name !== 'shm')
              .map((name) => ({ name, emptyDir: {} })),
            // Chromium's shared memory: in RAM, counted against the pod's memory limit.
            { name: 'shm', emptyDir: { medium: 'Memory' } },
          ],
          containers: [
            {
              name: BROWSER_CONTAINER,
              image: s.apiImage,
              ports: [{ name: 'cdp', containerPort: s.apiPort }],
              readinessProbe: profile.readinessProbe(s.apiPort),
              resources: resourcesOf(s.resources),
              securityContext,
              volumeMounts: mounts(writable),
              env: env(profile.browserEnv(session, podContext)),
            },
            {
              name: UI_CONTAINER,
              image: s.uiImage,
              ports: [{ name: 'ui', containerPort: s.uiPort }],
              resources: resourcesOf(s.uiResources),
              securityContext,
              volumeMounts: mounts(WRITABLE_PATHS),
              env: env(profile.uiEnv(podContext)),
            },
          ],
        },
      },
    },
  };
}

const resourcesOf = (r: ContainerResources) => ({
  requests: { cpu: r.cpuRequest, memory: r.memoryRequest, 'ephemeral-storage': r.ephemeralStorageRequest },
  limits: { cpu: r.cpuLimit, memory: r.memoryLimit, 'ephemeral-storage': r.ephemeralStorageLimit },
});
