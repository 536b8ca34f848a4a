import { randomBytes } from 'node:crypto';
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
/** On a warm browser's Job and pod until a session claims them: the Job's own name (a session's Job is named after it). */
export const LABEL_WARM = 'bso.dev/warm';
/** Set by the Job controller on each of a Job's pods (`job-name` before Kubernetes 1.27). */
const LABELS_JOB_NAME = ['batch.kubernetes.io/job-name', 'job-name'] as const;
/** A warm Job outlives its pool's idle limit by this much at most: its backstop when its agent is gone. */
const WARM_DEADLINE_SLACK_SEC = 60;
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
export const warmJobName = () => `bso-warm-${randomBytes(6).toString('hex')}`;
/** The name of the Job a pod belongs to. */
export const jobOfPod = (labels: Record<string, string> | undefined): string | undefined => LABELS_JOB_NAME.map((l) => labels?.[l]).find(Boolean);

/**
 * One Job per session: the browser API container and the UI container, never restarted, with a
 * deadline from the session's timeout and a TTL after it finishes, so the cluster cleans up even
 * when every agent is gone. The annotation holds enough of the session to rebuild it.
 */
export function buildJob(session: Session, s: JobSettings, ctx: StartContext = {}): V1Job {
  const profile = imageProfile(s.profile);
  const podContext = { apiPort: s.apiPort, uiPort: s.uiPort, publicUrl: ctx.publicUrl, sessionUrl: ctx.sessionUrl };
  return jobOf(s, {
    name: jobName(session.id),
    labels: { [LABEL_SESSION]: session.id, [LABEL_CLUSTER]: session.cluster },
    annotations: sessionAnnotations(session, ctx),
    activeDeadlineSeconds: sessionDeadlineSeconds(session),
    browserEnv: profile.browserEnv(session, podContext),
    uiEnv: profile.uiEnv(podContext),
  });
}

/**
 * A warm browser's Job, made before its session exists: the same pod with nothing of a session in it
 * (no id, no options: those come at claim, over CDP). Its deadline is its pool's idle limit and a
 * little more, the backstop for an agent that died holding it; a claim sets the session's own.
 */
export function buildWarmJob(name: string, s: JobSettings, maxIdleSec: number): V1Job {
  const podContext = { apiPort: s.apiPort, uiPort: s.uiPort };
  const profile = imageProfile(s.profile);
  return jobOf(s, {
    name,
    labels: { [LABEL_WARM]: name, [LABEL_CLUSTER]: s.cluster },
    annotations: {},
    activeDeadlineSeconds: maxIdleSec + WARM_DEADLINE_SLACK_SEC,
    browserEnv: profile.warmEnv?.(podContext) ?? [],
    uiEnv: profile.uiEnv(podContext),
  });
}

/** The session's record on its Job: the snapshot a restarted agent rebuilds it from, and its trace. */
export function sessionAnnotations(session: Session, ctx: StartContext): Record<string, string> {
  const { endpoints: _endpoints, ...snapshot } = session;
  return { [ANNOTATION_SESSION]: JSON.stringify(snapshot), ...(ctx.traceparent ? { [ANNOTATION_TRACEPARENT]: ctx.traceparent } : {}) };
}

/** The agent ends the session at its timeout; the Job's own deadline is the backstop. */
export const sessionDeadlineSeconds = (session: Session) => session.timeout + 30;

type JobIdentity = {
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  activeDeadlineSeconds: number;
  browserEnv: V1EnvVar[];
  uiEnv: V1EnvVar[];
};

function jobOf(s: JobSettings, who: JobIdentity): V1Job {
  const labels = { app: APP_LABEL, ...who.labels, [LABEL_NODE]: s.node };
  const profile = imageProfile(s.profile);
  // Pod Security `restricted`, and then some: a session's user drives the browser, so the pod is
  // treated as hostile: no API token, no Service addresses in its environment, no root, no
  // capabilities, nothing writable but its own emptyDirs (counted against its ephemeral storage).
  const securityContext = { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } };
  const writable: Record<string, string> = { ...WRITABLE_PATHS, ...profile.writablePaths };
  const mounts = (paths: Record<string, string>) => Object.entries(paths).map(([name, mountPath]) => ({ name, mountPath }));
  const env = (extra: V1EnvVar[]) => [{ name: 'HOME', value: WRITABLE_PATHS.home }, ...extra];
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: who.name,
      namespace: s.namespace,
      labels,
      ...(Object.keys(who.annotations).length ? { annotations: who.annotations } : {}),
    },
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: who.activeDeadlineSeconds,
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
              env: env(who.browserEnv),
            },
            {
              name: UI_CONTAINER,
              image: s.uiImage,
              ports: [{ name: 'ui', containerPort: s.uiPort }],
              resources: resourcesOf(s.uiResources),
              securityContext,
              volumeMounts: mounts(WRITABLE_PATHS),
              env: env(who.uiEnv),
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
