import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { nodeCapacity, sessionRequests } from '../../agent/runtime/kubernetes/capacity.js';
import { buildJob, buildWarmJob, jobName, jobOfPod, warmJobName, type JobSettings } from '../../agent/runtime/kubernetes/job.js';
import { microTime } from '../../agent/runtime/kubernetes/leader.js';
import { systemClock } from '../../shared/clock.js';
import { createLogger } from '../../shared/logger.js';
import { podState } from '../../agent/runtime/kubernetes/pod-state.js';
import { statusOf, withRetry } from '../../agent/runtime/kubernetes/retry.js';
import { ManualClock } from '../helpers/clock.js';
import { pendingSession } from '../helpers/session.js';

const quiet = createLogger({ level: 'silent' });
import type { Session } from '../../shared/session.js';
import { profileNameFor, steelLinks, steelSessionBody } from '../../agent/runtime/kubernetes/profiles.js';

const settings: JobSettings = {
  namespace: 'bso',
  cluster: 'c1',
  node: 'agent-1',
  apiImage: 'api:1',
  uiImage: 'ui:1',
  apiPort: 9222,
  uiPort: 8080,
  jobTtlSeconds: 120,
  profile: 'chromium',
  resources: { cpuRequest: '250m', cpuLimit: '1', memoryRequest: '512Mi', memoryLimit: '1Gi', ephemeralStorageRequest: '256Mi', ephemeralStorageLimit: '2Gi' },
  uiResources: { cpuRequest: '50m', cpuLimit: '250m', memoryRequest: '64Mi', memoryLimit: '256Mi', ephemeralStorageRequest: '64Mi', ephemeralStorageLimit: '256Mi' },
  runAsUser: 1000,
};
const session: Session = pendingSession({ options: { userAgent: 'UA', viewport: { width: 800, height: 600 } } });

describe('buildJob', () => {
  it('makes one never-restarting Job with both containers, deadlines, TTL, probe, labels and the session', () => {
    const job = buildJob(session, settings);
    expect(job.metadata).toMatchObject({
      name: jobName(session.id),
      namespace: 'bso',
      labels: { app: 'bso-browser', 'bso.dev/session-id': session.id, 'bso.dev/cluster': 'c1', 'bso.dev/node': 'agent-1' },
    });
    expect(JSON.parse(job.metadata!.annotations!['bso.dev/session']!)).toEqual(session);
    // A client's trace context joins the Job; without one there is no annotation for it.
    expect(job.metadata!.annotations).not.toHaveProperty('bso.dev/traceparent');
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    expect(buildJob(session, settings, { traceparent }).metadata!.annotations!['bso.dev/traceparent']).toBe(traceparent);
    expect(job.spec).toMatchObject({ backoffLimit: 0, activeDeadlineSeconds: 630, ttlSecondsAfterFinished: 120 });
    const pod = job.spec!.template.spec!;
    expect(pod.restartPolicy).toBe('Never');
    // Pinned to the agent's own node through the scheduler (which still checks the node's room).
    expect(pod.nodeName).toBeUndefined();
    expect(pod.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms).toEqual([
      { matchFields: [{ key: 'metadata.name', operator: 'In', values: ['agent-1'] }] },
    ]);
    expect(job.spec!.template.metadata!.labels).toMatchObject({ 'bso.dev/node': 'agent-1' });
    expect(pod.containers.map((c) => [c.name, c.image, c.ports![0]!.containerPort])).toEqual([
      ['browser', 'api:1', 9222],
      ['ui', 'ui:1', 8080],
    ]);
    expect(pod.containers[0]!.readinessProbe!.httpGet).toMatchObject({ path: '/json/version', port: 9222 });
    expect(pod.containers[0]!.resources).toEqual({
      requests: { cpu: '250m', memory: '512Mi', 'ephemeral-storage': '256Mi' },
      limits: { cpu: '1', memory: '1Gi', 'ephemeral-storage': '2Gi' },
    });
    // The UI container has its own small size: the browser's would double each pod.
    expect(pod.containers[1]!.resources).toEqual({
      requests: { cpu: '50m', memory: '64Mi', 'ephemeral-storage': '64Mi' },
      limits: { cpu: '250m', memory: '256Mi', 'ephemeral-storage': '256Mi' },
    });
    // The chromium profile's contract: the options as one JSON variable, and each image's port.
    expect(pod.containers[0]!.env).toEqual(
      expect.arrayContaining([
        { name: 'BSO_SESSION_ID', value: session.id },
        { name: 'BSO_OPTIONS', value: JSON.stringify(session.options) },
        { name: 'PORT', value: '9222' },
      ]),
    );
    expect(pod.containers[1]!.env).toContainEqual({ name: 'PORT', value: '8080' });
    expect(jobName(session.id).length).toBeLessThanOrEqual(63);
  });

  it('hardens the pod: no API token or service links, non-root, no capabilities, read-only root with emptyDirs to write', () => {
    const pod = buildJob(session, settings).spec!.template.spec!;
    expect(pod).toMatchObject({ automountServiceAccountToken: false, enableServiceLinks: false });
    expect(pod.securityContext).toEqual({ runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } });
    const volumes = new Map(pod.volumes!.map((v) => [v.name, v]));
    for (const c of pod.containers) {
      expect(c.securityContext, c.name).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
      expect(c.volumeMounts!.map((m) => m.mountPath).sort(), c.name).toEqual(['/dev/shm', '/home/browser', '/tmp']);
      for (const m of c.volumeMounts!) expect(volumes.get(m.name)?.emptyDir, m.name).toBeDefined();
      expect(c.env).toContainEqual({ name: 'HOME', value: '/home/browser' });
    }
    expect(volumes.get('shm')!.emptyDir).toEqual({ medium: 'Memory' });
  });
});

describe('buildWarmJob', () => {
  it("is a session's pod with nothing of a session in it: its own name as its warm label, no id, options or record, its pool's idle limit as its deadline", () => {
    const name = warmJobName();
    expect(name).toMatch(/^bso-warm-[0-9a-f]{12}$/);
    expect(warmJobName()).not.toBe(name);
    const warm = buildWarmJob(name, settings, 600);
    expect(warm.metadata).toEqual({ name, namespace: 'bso', labels: { app: 'bso-browser', 'bso.dev/warm': name, 'bso.dev/cluster': 'c1', 'bso.dev/node': 'agent-1' } });
    expect(warm.spec!.template.metadata!.labels).toEqual(warm.metadata!.labels);
    expect(warm.spec!.activeDeadlineSeconds).toBe(660);
    const env = warm.spec!.template.spec!.containers.flatMap((c) => c.env!.map((e) => e.name));
    expect(env).not.toContain('BSO_SESSION_ID');
    expect(env).not.toContain('BSO_OPTIONS');
    expect(warm.spec!.template.spec!.containers.map((c) => c.env!.find((e) => e.name === 'PORT')?.value)).toEqual(['9222', '8080']);
    // The same pod otherwise: containers, probe, hardening, node pinning.
    const cold = buildJob(session, settings).spec!.template.spec!;
    const { containers: warmContainers, ...warmPod } = warm.spec!.template.spec!;
    const { containers: coldContainers, ...coldPod } = cold;
    expect(warmPod).toEqual(coldPod);
    const withoutEnv = ({ env: _env, ...c }: (typeof coldContainers)[number]) => c;
    expect(warmContainers.map(withoutEnv)).toEqual(coldContainers.map(withoutEnv));
  });

  it("a pod's Job is found by the label the Job controller sets (or its pre-1.27 name)", () => {
    expect(jobOfPod({ 'batch.kubernetes.io/job-name': 'bso-warm-1', 'job-name': 'bso-warm-1' })).toBe('bso-warm-1');
    expect(jobOfPod({ 'job-name': 'bso-x' })).toBe('bso-x');
    expect(jobOfPod({ app: 'bso-browser' })).toBeUndefined();
    expect(jobOfPod(undefined)).toBeUndefined();
  });
});

describe('image profiles', () => {
  it.each([
    ['steel-dev/steel-browser-api:latest', undefined, 'steel'],
    ['ghcr.io/steel-dev/steel-browser:v0.5.2', undefined, 'steel'],
    ['steel-browser-api@sha256:abc', undefined, 'steel'],
    ['bso/browser-api:latest', undefined, 'chromium'],
    ['chromedp/headless-shell:latest', undefined, 'chromium'],
    ['example/not-steel-browser-fork:1', undefined, 'chromium'],
    ['steel-dev/steel-browser-api:latest', 'chromium', 'chromium'],
    ['bso/browser-api:latest', 'steel', 'steel'],
  ] as const)('image %s with BROWSER_PROFILE=%s is %s', (image, explicit, expected) => {
    expect(profileNameFor(explicit, image)).toBe(expected);
  });

  const steelSettings: JobSettings = {
    ...settings,
    profile: 'steel',
    apiImage: 'steel-dev/steel-browser-api:latest',
    uiImage: 'steel-dev/steel-browser-ui:latest',
    apiPort: 3000,
    uiPort: 5173,
  };

  it('steel: probed on /v1/health, its URLs pointed through the router, the locale a launch flag, the UI told where the API is', () => {
    const s = pendingSession({ options: { locale: 'de-DE' } });
    const pod = buildJob(s, steelSettings, { publicUrl: 'https://bso.example.com' }).spec!.template.spec!;
    const [browser, ui] = pod.containers;
    expect(browser!.readinessProbe!.httpGet).toMatchObject({ path: '/v1/health', port: 3000 });
    expect(browser!.env).toEqual(
      expect.arrayContaining([
        { name: 'PORT', value: '3000' },
        { name: 'DOMAIN', value: `bso.example.com/sessions/${s.id}/proxy` },
        { name: 'CDP_DOMAIN', value: `bso.example.com/sessions/${s.id}/proxy` },
        { name: 'USE_SSL', value: 'true' },
        { name: 'CHROME_ARGS', value: '--lang=de-DE --accept-lang=de-DE' },
      ]),
    );
    expect(ui!.env).toContainEqual({ name: 'API_URL', value: 'http://127.0.0.1:3000' });
    // steel writes its sessions' files to /files: an emptyDir of the browser container's own, the root staying read-only.
    expect(browser!.volumeMounts).toContainEqual({ name: 'files', mountPath: '/files' });
    expect(ui!.volumeMounts!.map((m) => m.mountPath)).not.toContain('/files');
    expect(pod.volumes).toContainEqual({ name: 'files', emptyDir: {} });
    // The session on its own host, serving steel's API: steel's URLs point there (its cookie lets steel's pages in).
    const onItsHost = buildJob(s, steelSettings, { publicUrl: 'https://bso.example.com', sessionUrl: `https://${s.id}.sessions.example.com/` }).spec!.template.spec!.containers[0]!
      .env!;
    expect(onItsHost).toEqual(
      expect.arrayContaining([
        { name: 'DOMAIN', value: `${s.id}.sessions.example.com` },
        { name: 'USE_SSL', value: 'true' },
      ]),
    );
    // No public address known (an older router): steel's own host:port, links still usable as paths.
    const plain = buildJob(s, steelSettings).spec!.template.spec!.containers[0]!.env!;
    expect(plain.map((e) => e.name)).not.toContain('DOMAIN');
  });

  it("steel: the session's options as steel's body: known ones mapped, steel's own passed, the rest in extra", () => {
    const s = pendingSession({
      options: {
        userAgent: 'UA',
        viewport: { width: 800, height: 600 },
        locale: 'fr',
        timezone: 'Europe/Paris',
        blockAds: true,
        proxyUrl: 'http://p:1',
        customOption: 'value',
        extra: { mine: 1 },
      },
    });
    expect(steelSessionBody(s)).toEqual({
      sessionId: s.id,
      userAgent: 'UA',
      dimensions: { width: 800, height: 600 },
      timezone: 'Europe/Paris',
      blockAds: true,
      proxyUrl: 'http://p:1',
      extra: { mine: 1, customOption: 'value' },
    });
    // Fields of steel's that touch the container are the client's data, not steel's settings.
    expect(steelSessionBody(pendingSession({ options: { userDataDir: '/etc', isSelenium: true } }))).toMatchObject({ extra: { userDataDir: '/etc', isSelenium: true } });
    expect(steelSessionBody(pendingSession({ options: {} }))).not.toHaveProperty('extra');
  });

  it("steel: its URLs become paths under the session's proxy, whatever host it wrote", () => {
    const id = '0c1b3c1e-7c43-4c1a-9d6e-2b0c6d1d6f00';
    expect(
      steelLinks(
        {
          websocketUrl: `wss://bso.example.com/sessions/${id}/proxy/`,
          debugUrl: `https://bso.example.com/sessions/${id}/proxy/v1/sessions/debug`,
          sessionViewerUrl: 'http://10.1.2.3:3000/',
        },
        id,
      ),
    ).toEqual({ websocket: '/', debug: '/v1/sessions/debug', viewer: '/' });
    expect(steelLinks({ debugUrl: 'not a url', websocketUrl: 42 }, id)).toEqual({ debug: undefined, viewer: undefined, websocket: undefined });
  });
});

const pod = (status: V1Pod['status'], created = new Date(0).toISOString()): V1Pod => ({
  metadata: { creationTimestamp: created as unknown as Date },
  spec: { nodeName: 'n1', containers: [] },
  status,
});

describe('podState', () => {
  it('is running only when Ready with an IP', () => {
    expect(podState(pod({ phase: 'Running', podIP: '10.0.0.5', conditions: [{ type: 'Ready', status: 'True' }] }), 0, 1000)).toEqual({
      kind: 'running',
      ip: '10.0.0.5',
      node: 'n1',
    });
    expect(podState(pod({ phase: 'Running', podIP: '10.0.0.5', conditions: [{ type: 'Ready', status: 'False' }] }), 0, 1000).kind).toBe('pending');
    expect(podState(pod({ phase: 'Pending' }), 0, 1000).kind).toBe('pending');
  });
  it('fails on image pull errors, crash loops and terminated containers, with the reason', () => {
    const waiting = (reason: string) =>
      pod({ phase: 'Pending', containerStatuses: [{ name: 'browser', image: 'x', imageID: '', ready: false, restartCount: 0, state: { waiting: { reason, message: 'm' } } }] });
    expect(podState(waiting('ImagePullBackOff'), 0, 1000)).toEqual({ kind: 'failed', reason: 'container browser: ImagePullBackOff: m' });
    expect(podState(waiting('CrashLoopBackOff'), 0, 1000).kind).toBe('failed');
    expect(podState(waiting('ContainerCreating'), 0, 1000).kind).toBe('pending');
    const term = pod({
      phase: 'Running',
      containerStatuses: [{ name: 'ui', image: 'x', imageID: '', ready: false, restartCount: 0, state: { terminated: { exitCode: 2, reason: 'Error' } } }],
    });
    expect(podState(term, 0, 1000)).toEqual({ kind: 'failed', reason: 'container ui terminated with exit code 2 (Error)' });
    expect(podState(pod({ phase: 'Failed', reason: 'DeadlineExceeded' }), 0, 1000)).toEqual({ kind: 'failed', reason: 'deadline exceeded' });
  });
  it('a browser container that exited 0 by itself was closed by its client: a clean end, not a crash', () => {
    const closed = pod({
      phase: 'Running',
      containerStatuses: [{ name: 'browser', image: 'x', imageID: '', ready: false, restartCount: 0, state: { terminated: { exitCode: 0, reason: 'Completed' } } }],
    });
    expect(podState(closed, 0, 1000)).toEqual({ kind: 'failed', reason: 'closed by the client', clean: true });
  });
  it('tolerates Unschedulable until the start deadline', () => {
    const p = pod({ phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/1 nodes: Insufficient cpu' }] });
    expect(podState(p, 999, 1000)).toEqual({ kind: 'pending', reason: 'unschedulable' });
    expect(podState(p, 1000, 1000)).toEqual({ kind: 'failed', reason: 'unschedulable: 0/1 nodes: Insufficient cpu' });
  });
});

describe('statusOf', () => {
  it('finds the HTTP status wherever the client put it', () => {
    expect(statusOf({ code: 409 })).toBe(409);
    expect(statusOf({ response: { statusCode: 404 } })).toBe(404);
    expect(statusOf(new Error('socket hang up'))).toBeUndefined();
  });
});

describe('withRetry', () => {
  /** Lets the retry's timers fire as they are scheduled. */
  async function drive<T>(clock: ManualClock, p: Promise<T>): Promise<T> {
    let done = false;
    void p.finally(() => (done = true)).catch(() => {});
    for (let i = 0; i < 200 && !done; i++) {
      await new Promise((r) => setTimeout(r, 0));
      clock.advance(1000);
    }
    return p;
  }

  it('retries throttling, server errors and transport failures, capped, then succeeds', async () => {
    const clock = new ManualClock();
    const failures = [{ code: 429 }, { code: 503 }, new Error('socket hang up')];
    let calls = 0;
    const lines: string[] = [];
    const logger = createLogger({ level: 'debug', write: (l: string) => lines.push(l) });
    const res = await drive(
      clock,
      withRetry('op', async () => (calls++ < failures.length ? Promise.reject(failures[calls - 1]) : 'ok'), { clock, logger }),
    );
    expect(res).toBe('ok');
    expect(calls).toBe(4);
    // Each attempt at debug, with the status that made it retry (none for a transport failure).
    const attempts = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'kubernetes call');
    expect(attempts.map((a) => [a.call, a.attempt, a.outcome, a.status])).toEqual([
      ['op', 1, 'retrying', 429],
      ['op', 2, 'retrying', 503],
      ['op', 3, 'retrying', null],
      ['op', 4, 'ok', undefined],
    ]);
  });

  it('does not retry what retrying cannot fix, and gives up after the attempts', async () => {
    const clock = new ManualClock();
    let calls = 0;
    await expect(
      drive(
        clock,
        withRetry('op', async () => (calls++, Promise.reject({ code: 403 })), { clock, logger: quiet }),
      ),
    ).rejects.toMatchObject({ code: 403 });
    expect(calls).toBe(1);
    calls = 0;
    await expect(
      drive(
        clock,
        withRetry('op', async () => (calls++, Promise.reject({ code: 500 })), { clock, logger: quiet, attempts: 3 }),
      ),
    ).rejects.toMatchObject({ code: 500 });
    expect(calls).toBe(3);
  });

  it('bounds each attempt by its timeout', async () => {
    const clock = new ManualClock();
    let calls = 0;
    const hang = () => (calls++, new Promise<never>(() => {}));
    await expect(drive(clock, withRetry('list pods', hang, { clock, logger: quiet, attempts: 2, timeoutMs: 5000 }))).rejects.toThrow('list pods timed out after 5000 ms');
    expect(calls).toBe(2);
  });
});

describe('node capacity', () => {
  const perSession = sessionRequests({ spec: buildJob(session, settings).spec!.template.spec });
  const node = (allocatable: Record<string, string>) => ({ readNode: async () => ({ status: { allocatable } }) }) as never;

  it("adds up every container's requests of a session's pod", () => {
    // The browser container (250m, 512Mi) and the UI container (50m, 64Mi).
    expect(perSession).toEqual({ cpu: 0.3, memory: 576 * 1024 * 1024 });
  });

  it.each([
    ['CPU bound', { cpu: '4', memory: '64Gi', pods: '110' }, 13],
    ['memory bound', { cpu: '64', memory: '3Gi', pods: '110' }, 5],
    ['pod count bound', { cpu: '64', memory: '64Gi', pods: '5' }, 5],
    ['millicores and decimal units', { cpu: '2500m', memory: '8G', pods: '110' }, 8],
    ['too small for one: still offered one, so the scheduler says why it does not fit', { cpu: '100m', memory: '64Gi', pods: '110' }, 1],
  ])('%s', async (_what, allocatable, expected) => {
    expect(await nodeCapacity(node(allocatable), 'n1', perSession, { clock: systemClock, logger: quiet })).toBe(expected);
  });
});

describe('leader election time format', () => {
  it('writes MicroTime with six fractional digits, as the apiserver parses it', () => {
    expect(microTime(Date.UTC(2026, 10, 28, 1, 2, 3, 45))).toBe('2026-11-28T01:02:03.045000Z');
  });
});
