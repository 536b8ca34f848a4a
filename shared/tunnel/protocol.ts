import { z } from 'zod';
import { WireError } from '../errors.js';
import { Session, SessionReport } from '../session.js';

export const PROTOCOL_VERSION = 1;

/** A cluster id is a DNS label: it names a Durable Object, a label value and a Kubernetes name part. */
export const CLUSTER_ID = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Close codes of the agent tunnel, one meaning each. */
export const TunnelClose = {
  HEARTBEAT_TIMEOUT: 4000,
  REPLACED: 4001,
  BAD_HELLO: 4002,
  UNSUPPORTED_VERSION: 4003,
  WRONG_CLUSTER: 4004,
  /** The agent already holds a tunnel to the replica this connection reached (it redials for another). */
  SAME_REPLICA: 4005,
} as const;

/** A router replica's id (REPLICA_ID): also a Redis sorted-set member and a log field. */
export const REPLICA_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Live replicas one message may name: far above any real deployment, and a hello naming them all
 * still fits MAX_HELLO_BYTES. */
export const MAX_REPLICAS = 32;
const ReplicaIds = z.array(z.string().regex(REPLICA_ID)).max(MAX_REPLICAS);

export const Hello = z.strictObject({
  t: z.literal('hello'),
  v: z.number().int(),
  clusterId: z.string().regex(CLUSTER_ID),
  nodeName: z.string().min(1).max(253),
  agentId: z.string().min(1).max(128),
  runtime: z.string().min(1).max(32),
  /** Sessions this agent can hold at once (LOCAL_MAX_BROWSERS); absent: not known to the agent. */
  capacity: z.number().int().min(1).max(100_000).optional(),
  /** Router replicas this agent already holds a tunnel to: reaching one of them again, it is turned away
   * (SAME_REPLICA) without touching the tunnel it has. Sent only when non-empty. */
  replicasHeld: ReplicaIds.optional(),
});
export type Hello = z.infer<typeof Hello>;

/** Which browser port a proxied stream targets. */
export const StreamTarget = z.enum(['api', 'ui']);

const Headers = z.record(z.string(), z.string());

export const StreamSpec = z.strictObject({
  sessionId: z.string(),
  /** http: one exchange; ws: WebSocket messages; upgrade: the raw bytes of a WebSocket connection. */
  kind: z.enum(['http', 'ws', 'upgrade']),
  method: z.string().regex(/^[A-Z]{1,16}$/),
  path: z.string().startsWith('/').max(8192),
  headers: Headers,
  target: StreamTarget,
});
export type StreamSpec = z.infer<typeof StreamSpec>;

/** Control messages travel as JSON text frames; payload bytes travel as binary frames (see frames.ts). */
export const ControlMessage = z.discriminatedUnion('t', [
  Hello,
  /** `replica`/`replicas`: which router replica the tunnel reached and every live one (Node routers with
   * Redis); absent: one router (or the Workers directory), one tunnel is enough. */
  z.object({ t: z.literal('welcome'), v: z.number().int(), replica: z.string().regex(REPLICA_ID).optional(), replicas: ReplicaIds.optional() }),
  z.object({ t: z.literal('ping'), ts: z.number() }),
  z.object({ t: z.literal('pong'), ts: z.number() }),
  z.object({ t: z.literal('call'), id: z.number().int().nonnegative(), method: z.string(), params: z.unknown(), timeoutMs: z.number().int().positive() }),
  z.object({ t: z.literal('result'), id: z.number().int().nonnegative(), ok: z.boolean(), value: z.unknown().optional(), error: WireError.optional() }),
  z.object({ t: z.literal('open'), sid: z.number().int().positive(), spec: StreamSpec, end: z.boolean().optional() }),
  z.object({
    t: z.literal('opened'),
    sid: z.number().int().positive(),
    status: z.number().int(),
    headers: z.array(z.tuple([z.string(), z.string()])),
    protocol: z.string().optional(),
  }),
  z.object({ t: z.literal('open_failed'), sid: z.number().int().positive(), error: WireError }),
  z.object({ t: z.literal('end'), sid: z.number().int().positive() }),
  z.object({ t: z.literal('close'), sid: z.number().int().positive(), code: z.number().int().optional(), reason: z.string().max(123).optional() }),
  z.object({ t: z.literal('credit'), sid: z.number().int().positive(), bytes: z.number().int().positive() }),
]);
export type ControlMessage = z.infer<typeof ControlMessage>;

/** RPC methods: params and results, validated on both ends. */
export const Rpc = {
  'session.start': {
    params: z.object({
      session: Session,
      /** The router's address as the creating client reached it: an image that hands out URLs points them there. */
      publicUrl: z
        .url({ protocol: /^https?$/ })
        .max(2048)
        .optional(),
      /** The session's own host, when the router serves its browser API there: the image's URLs point there instead. */
      sessionUrl: z
        .url({ protocol: /^https?$/ })
        .max(2048)
        .optional(),
      /** The creating client's W3C trace context: on the agent's log lines and the Job's annotation. */
      traceparent: z
        .string()
        .regex(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/)
        .optional(),
    }),
    result: SessionReport,
  },
  'session.stop': {
    params: z.object({ id: z.string(), reason: z.enum(['deleted', 'timed_out', 'orphaned']) }),
    /** `active`: the agent's load after the stop, so the slot shows as free at once. */
    result: z.object({ stopped: z.boolean(), active: z.number().int().min(0).max(1_000_000).optional() }),
  },
  /** The client is done: end the session now if no client WebSocket is open, else when the last closes.
   * `found`: the agent holds it; `ended`: it ended now. */
  'session.release': { params: z.object({ id: z.string() }), result: z.object({ found: z.boolean(), ended: z.boolean() }) },
  'session.report': { params: SessionReport, result: z.object({ accepted: z.boolean() }) },
  /** The agent's view of its sessions: ids it runs, and full snapshots of the running ones, so a
   * router whose store lost them (Redis data loss) can rebuild them instead of stopping them. */
  'agent.sync': {
    params: z.object({ running: z.array(z.string()), snapshots: z.array(Session).default([]) }),
    result: z.object({ stop: z.array(z.string()), rebuilt: z.array(z.string()).default([]) }),
  },
  'agent.health': {
    params: z.object({
      checkedAt: z.number().int(),
      sessions: z.array(z.object({ id: z.string(), reachable: z.boolean() })),
      /** Sessions the agent holds right now, starting ones included: its load, for placement. */
      active: z.number().int().min(0).max(1_000_000).optional(),
    }),
    result: z.object({}),
  },
  /** From the agent leading its Kubernetes cluster (it holds the cluster's Lease): every Job of the
   * cluster and the nodes that stopped renewing their node Lease. The router fails sessions on lost
   * nodes and running sessions whose Job vanished, and answers which Jobs to delete. */
  'cluster.sync': {
    params: z.object({
      jobs: z.array(z.object({ id: z.string().min(1).max(128), node: z.string().max(253) })).max(10_000),
      lostNodes: z.array(z.string().min(1).max(253)).max(1000),
    }),
    result: z.object({ delete: z.array(z.string()) }),
  },
  /** The agent's load changed (a session taken or ended), told to every replica it holds a tunnel to, so
   * each places on fresh numbers rather than waiting for the next health report. */
  'agent.load': { params: z.object({ active: z.number().int().min(0).max(1_000_000) }), result: z.object({}) },
  /** Router → agent: the live replicas changed, so the agent holds a tunnel to each (an agent that
   * does not know this method answers an error, which the router ignores). */
  'router.replicas': { params: z.object({ replicas: ReplicaIds }), result: z.object({}) },
} as const;
export type RpcMethod = keyof typeof Rpc;
export type RpcParams<M extends RpcMethod> = z.infer<(typeof Rpc)[M]['params']>;
export type RpcResult<M extends RpcMethod> = z.infer<(typeof Rpc)[M]['result']>;
