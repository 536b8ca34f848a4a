import { hostname } from 'node:os';
import { z } from 'zod';
import type { JobSettings } from './runtime/kubernetes/job.js';
import { ConfigError, intVar, isLoopbackHost, logLevelVar, optionalInt, optionalString, parseEnv, type Env } from '../shared/env.js';
import { imageProfile, PROFILE_NAMES, profileNameFor } from './runtime/kubernetes/profiles.js';
import { CLUSTER_ID } from '../shared/tunnel/protocol.js';
import { DEFAULT_BROWSER_USER } from './runtime/chromium.js';
import type { WarmPoolSettings } from './runtime/warm-pool.js';

/** Every variable the agent reads (listed in .env.example). */
/** Prometheus' registered default for exporters of this kind; `npm start` moves off it when it is taken. */
export const DEFAULT_METRICS_PORT = 9464;

export const AGENT_VARIABLES = (): string[] => Object.keys(AgentEnv.shape);

const AgentEnv = z.object({
  ROUTER_URL: z.url().refine((u) => /^(wss?|https?):\/\//.test(u), 'must be a ws://, wss://, http:// or https:// URL'),
  AGENT_TOKEN: z.string().min(16, 'must be at least 16 characters'),
  ALLOW_INSECURE_TUNNEL: z.enum(['true', 'false']).default('false'),
  CLUSTER_ID: z.string().regex(CLUSTER_ID, 'must be a DNS label').default('local'),
  NODE_NAME: optionalString(),
  AGENT_RUNTIME: z.enum(['local', 'kubernetes']).default('local'),
  KUBECONFIG: optionalString(),
  K8S_NAMESPACE: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a DNS label')
    .default('bso-sessions'),
  BROWSER_API_IMAGE: z.string().min(1).default('bso/browser-api:latest'),
  BROWSER_UI_IMAGE: z.string().min(1).default('bso/browser-ui:latest'),
  BROWSER_PROFILE: z.preprocess((v) => (v === '' ? undefined : v), z.enum(PROFILE_NAMES).optional()),
  // Defaults follow the profile: steel's API listens on 3000, Chromium's DevTools on 9222.
  BROWSER_API_PORT: optionalInt(1, 65535),
  BROWSER_UI_PORT: optionalInt(1, 65535),
  JOB_TTL_SECONDS: intVar(300, 0),
  POD_CPU_REQUEST: z.string().default('250m'),
  POD_CPU_LIMIT: z.string().default('1'),
  POD_MEMORY_REQUEST: z.string().default('512Mi'),
  POD_MEMORY_LIMIT: z.string().default('1Gi'),
  POD_EPHEMERAL_STORAGE_REQUEST: z.string().default('256Mi'),
  POD_EPHEMERAL_STORAGE_LIMIT: z.string().default('2Gi'),
  UI_CPU_REQUEST: z.string().default('50m'),
  UI_CPU_LIMIT: z.string().default('250m'),
  UI_MEMORY_REQUEST: z.string().default('64Mi'),
  UI_MEMORY_LIMIT: z.string().default('256Mi'),
  UI_EPHEMERAL_STORAGE_REQUEST: z.string().default('64Mi'),
  UI_EPHEMERAL_STORAGE_LIMIT: z.string().default('256Mi'),
  POD_RUN_AS_USER: intVar(1000, 1, 2 ** 31 - 1),
  K8S_SCHEDULE_TIMEOUT_MS: intVar(30_000, 1000),
  K8S_LEADER_NAMESPACE: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a DNS label')
    .default('bso'),
  K8S_LEADER_LEASE_SEC: intVar(15, 2, 300),
  K8S_NODE_LOST_SEC: intVar(22, 2, 600),
  K8S_CLEANUP_INTERVAL_MS: intVar(2000, 100, 600_000),
  CHROMIUM_PATH: z.string().default('/usr/bin/chromium'),
  CHROMIUM_USER: z
    .string()
    .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be a user name')
    .default(DEFAULT_BROWSER_USER),
  CHROMIUM_NO_SANDBOX: z.enum(['true', 'false']).default('false'),
  CHROMIUM_FIREWALL: z.enum(['true', 'false']).default('true'),
  MAX_WS_MESSAGE_BYTES: intVar(64 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
  MAX_DEVTOOLS_CONNECTIONS: intVar(32, 1, 1000),
  LOCAL_MAX_BROWSERS: intVar(16, 1, 1000),
  WARM_POOL_SIZE: intVar(0, 0, 1000),
  WARM_POOL_MIN_SIZE: intVar(1, 0, 1000),
  WARM_POOL_MAX_IDLE: intVar(600, 5, 86_400),
  WARM_POOL_DEMAND_WINDOW_SEC: intVar(60, 5, 3600),
  METRICS_PORT: intVar(DEFAULT_METRICS_PORT, 0, 65535),
  METRICS_HOST: z.string().default('0.0.0.0'),
  HEALTH_INTERVAL_MS: intVar(5000, 100),
  SYNC_INTERVAL_MS: intVar(30_000, 100),
  START_TIMEOUT_MS: intVar(30_000, 1000),
  LOG_LEVEL: logLevelVar(),
});

export type AgentConfig = {
  routerUrl: string;
  token: string;
  clusterId: string;
  nodeName: string;
  runtime: 'local' | 'kubernetes';
  kubernetes: Omit<JobSettings, 'cluster' | 'node'> & {
    kubeconfig?: string;
    scheduleTimeoutMs: number;
    /** The cluster's leader election and the cleanup its leader runs. */
    leadership: {
      /** Where the leader Lease lives (the agent's own namespace). */
      namespace: string;
      leaseMs: number;
      /** A node whose Lease went unrenewed this long is lost: its sessions fail, its Jobs are deleted. */
      nodeLostMs: number;
      cleanupIntervalMs: number;
    };
  };
  chromiumPath: string;
  /** The account browsers run as, when the agent runs as root (Chromium never does). */
  chromiumUser: string | undefined;
  noSandbox: boolean;
  /** Keep the browser account off this host's own addresses (nftables); only with `chromiumUser`. */
  firewall: boolean;
  maxWsMessageBytes: number;
  maxDevtoolsConnections: number;
  localMaxBrowsers: number;
  warmPool: WarmPoolSettings;
  metricsPort: number;
  /** Serve metrics on any free port when `metricsPort` is taken: only where the port is a default nobody chose (`npm start`). */
  metricsPortFallback: boolean;
  metricsHost: string;
  healthIntervalMs: number;
  syncIntervalMs: number;
  startTimeoutMs: number;
  logLevel: z.infer<ReturnType<typeof logLevelVar>>;
  /** Variables set in the environment that the chosen runtime never reads (said once at start). */
  ignoredVariables: string[];
};

/** What only the Kubernetes runtime reads: set under the local runtime, they would be ignored silently. */
const KUBERNETES_ONLY = /^(K8S_|BROWSER_|POD_|UI_(CPU|MEMORY|EPHEMERAL)_|JOB_TTL_SECONDS$|KUBECONFIG$)/;

export function loadAgentConfig(env: Env, isRoot: boolean): AgentConfig {
  const e = parseEnv(AgentEnv, env);
  const profile = profileNameFor(e.BROWSER_PROFILE, e.BROWSER_API_IMAGE);
  if (e.WARM_POOL_SIZE > 0 && e.AGENT_RUNTIME === 'local' && e.WARM_POOL_SIZE > e.LOCAL_MAX_BROWSERS) {
    throw new ConfigError(`invalid configuration:\n  WARM_POOL_SIZE: ${e.WARM_POOL_SIZE} warm browsers cannot fit in LOCAL_MAX_BROWSERS=${e.LOCAL_MAX_BROWSERS}`);
  }
  if (e.WARM_POOL_SIZE > 0 && e.AGENT_RUNTIME === 'kubernetes' && !imageProfile(profile).reachWarm) {
    throw new ConfigError(
      `invalid configuration:\n  WARM_POOL_SIZE: the ${profile} profile cannot keep warm pods (its pod is made for its session); set WARM_POOL_SIZE=0 or use the chromium profile`,
    );
  }
  const base = e.ROUTER_URL.replace(/^http/, 'ws').replace(/\/+$/, '');
  // The token travels in the upgrade request: in clear text only to this machine, or when said so.
  if (base.startsWith('ws://') && !isLoopbackHost(new URL(base).hostname) && e.ALLOW_INSECURE_TUNNEL !== 'true') {
    throw new ConfigError(
      'invalid configuration:\n  ROUTER_URL: a cleartext ws:// or http:// router that is not on this machine would carry AGENT_TOKEN unencrypted: use wss:// or https://, or set ALLOW_INSECURE_TUNNEL=true (e.g. inside a cluster network you trust)',
    );
  }
  return {
    // The cluster rides in the URL too: the Workers router routes the upgrade to that cluster's hub.
    routerUrl: `${base.endsWith('/agent/connect') ? base : `${base}/agent/connect`}?cluster=${encodeURIComponent(e.CLUSTER_ID)}`,
    token: e.AGENT_TOKEN,
    clusterId: e.CLUSTER_ID,
    nodeName: e.NODE_NAME ?? hostname(),
    runtime: e.AGENT_RUNTIME,
    kubernetes: {
      kubeconfig: e.KUBECONFIG,
      namespace: e.K8S_NAMESPACE,
      apiImage: e.BROWSER_API_IMAGE,
      uiImage: e.BROWSER_UI_IMAGE,
      profile,
      apiPort: e.BROWSER_API_PORT ?? (profile === 'steel' ? 3000 : 9222),
      uiPort: e.BROWSER_UI_PORT ?? (profile === 'steel' ? 5173 : 8080),
      jobTtlSeconds: e.JOB_TTL_SECONDS,
      resources: {
        cpuRequest: e.POD_CPU_REQUEST,
        cpuLimit: e.POD_CPU_LIMIT,
        memoryRequest: e.POD_MEMORY_REQUEST,
        memoryLimit: e.POD_MEMORY_LIMIT,
        ephemeralStorageRequest: e.POD_EPHEMERAL_STORAGE_REQUEST,
        ephemeralStorageLimit: e.POD_EPHEMERAL_STORAGE_LIMIT,
      },
      uiResources: {
        cpuRequest: e.UI_CPU_REQUEST,
        cpuLimit: e.UI_CPU_LIMIT,
        memoryRequest: e.UI_MEMORY_REQUEST,
        memoryLimit: e.UI_MEMORY_LIMIT,
        ephemeralStorageRequest: e.UI_EPHEMERAL_STORAGE_REQUEST,
        ephemeralStorageLimit: e.UI_EPHEMERAL_STORAGE_LIMIT,
      },
      runAsUser: e.POD_RUN_AS_USER,
      scheduleTimeoutMs: e.K8S_SCHEDULE_TIMEOUT_MS,
      leadership: {
        namespace: e.K8S_LEADER_NAMESPACE,
        leaseMs: e.K8S_LEADER_LEASE_SEC * 1000,
        nodeLostMs: e.K8S_NODE_LOST_SEC * 1000,
        cleanupIntervalMs: e.K8S_CLEANUP_INTERVAL_MS,
      },
    },
    chromiumPath: e.CHROMIUM_PATH,
    chromiumUser: isRoot ? e.CHROMIUM_USER : undefined,
    noSandbox: e.CHROMIUM_NO_SANDBOX === 'true',
    firewall: e.CHROMIUM_FIREWALL === 'true',
    maxWsMessageBytes: e.MAX_WS_MESSAGE_BYTES,
    maxDevtoolsConnections: e.MAX_DEVTOOLS_CONNECTIONS,
    localMaxBrowsers: e.LOCAL_MAX_BROWSERS,
    warmPool: {
      size: e.WARM_POOL_SIZE,
      minSize: Math.min(e.WARM_POOL_MIN_SIZE, e.WARM_POOL_SIZE),
      maxIdleMs: e.WARM_POOL_MAX_IDLE * 1000,
      demandWindowMs: e.WARM_POOL_DEMAND_WINDOW_SEC * 1000,
    },
    metricsPort: e.METRICS_PORT,
    metricsPortFallback: false,
    metricsHost: e.METRICS_HOST,
    healthIntervalMs: e.HEALTH_INTERVAL_MS,
    syncIntervalMs: e.SYNC_INTERVAL_MS,
    startTimeoutMs: e.START_TIMEOUT_MS,
    logLevel: e.LOG_LEVEL,
    ignoredVariables:
      e.AGENT_RUNTIME === 'local'
        ? Object.keys(env)
            .filter((k) => KUBERNETES_ONLY.test(k) && env[k] !== undefined && env[k] !== '')
            .sort()
        : [],
  };
}
