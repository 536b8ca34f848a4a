import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../../shared/node-metrics.js';
import { withDeadline, type Clock } from '../../shared/clock.js';
import type { Session } from '../../shared/session.js';
import type { MetricsPort } from '../http/app.js';
import { FLEET_READ_TIMEOUT_MS, renderFleetMetrics } from '../http/fleet-metrics.js';
import type { StoreObserver } from '../store/timed.js';
import type { FleetCounts } from '../store/types.js';

/** Router metrics for the Node runtime, each registry owned by its process (no global default). */
export function createRouterMetrics(deps: { clock: Clock; maxSessions: number; fleet: () => Promise<FleetCounts>; onFleetError: (err: unknown) => void }): MetricsPort & {
  sessionChanged(s: Session, previous: Session['status'] | null): void;
  agentsConnected(n: number): void;
  observeStore: StoreObserver;
  observeRpc(method: string, seconds: number, ok: boolean): void;
  observeStream(seconds: number): void;
} {
  const registry = new Registry();
  collectProcessMetrics(registry, 'router_');
  const requests = new Histogram({
    name: 'router_http_request_duration_seconds',
    help: 'HTTP requests by method, route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [registry],
  });
  const transitions = new Counter({
    name: 'router_session_transitions_total',
    help: 'Session status changes seen by this router',
    labelNames: ['status'],
    registers: [registry],
  });
  const agents = new Gauge({ name: 'router_agents_connected', help: 'Agent tunnels held by this router', registers: [registry] });
  const store = new Histogram({
    name: 'router_store_operation_duration_seconds',
    help: 'Session store calls by operation and outcome (ok, error)',
    labelNames: ['operation', 'outcome'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2],
    registers: [registry],
  });
  // What the fleet's active sessions are measured against (MAX_SESSIONS): capacity alerts divide by it.
  new Gauge({ name: 'router_session_slots', help: 'Session slots of the whole fleet (MAX_SESSIONS)', registers: [registry] }).set(deps.maxSessions);
  const rpcs = new Histogram({
    name: 'router_tunnel_rpc_duration_seconds',
    help: 'Calls this router made to agents over their tunnels, by method and outcome (ok, error)',
    labelNames: ['method', 'outcome'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
    registers: [registry],
  });
  const streams = new Histogram({
    name: 'router_tunnel_stream_duration_seconds',
    help: 'Proxied HTTP exchanges and WebSockets carried over agent tunnels, from open to close',
    buckets: [0.005, 0.05, 0.5, 5, 60, 600, 3600],
    registers: [registry],
  });
  const queueWaiting = new Gauge({
    name: 'router_queue_waiting',
    help: 'Creates waiting in the queue for a slot on this replica (sum over replicas: the queue)',
    registers: [registry],
  });
  const queueWait = new Histogram({
    name: 'router_queue_wait_seconds',
    help: 'Time creates spent in the queue, by outcome (served, timed_out, left, failed)',
    labelNames: ['outcome'],
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600],
    registers: [registry],
  });
  const fleetErrors = new Counter({
    name: 'router_fleet_read_errors_total',
    help: "Scrapes that answered without the fleet's session metrics: the store failed or was slow",
    registers: [registry],
  });
  return {
    contentType: registry.contentType,
    render: async () => {
      // The fleet's numbers come from the store; a scrape while it is down still answers the rest.
      const fleet = await withDeadline(deps.clock, deps.fleet(), FLEET_READ_TIMEOUT_MS, {
        error: () => new Error(`the store did not give the fleet's counts within ${FLEET_READ_TIMEOUT_MS} ms`),
      }).then(renderFleetMetrics, (err: unknown) => {
        fleetErrors.inc();
        deps.onFleetError(err);
        return '';
      });
      return (await registry.metrics()) + fleet;
    },
    observeRequest: (method, route, status, seconds) => requests.observe({ method, route, status: String(status) }, seconds),
    sessionChanged: (s) => transitions.inc({ status: s.status }),
    agentsConnected: (n) => agents.set(n),
    observeStore: (operation, seconds, ok) => store.observe({ operation, outcome: ok ? 'ok' : 'error' }, seconds),
    observeRpc: (method, seconds, ok) => rpcs.observe({ method, outcome: ok ? 'ok' : 'error' }, seconds),
    observeStream: (seconds) => streams.observe(seconds),
    queueWaiting: (delta) => queueWaiting.inc(delta),
    observeQueueWait: (seconds, outcome) => queueWait.observe({ outcome }, seconds),
  };
}
