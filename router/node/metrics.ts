import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Session } from '../../shared/session.js';
import type { MetricsPort } from '../http/app.js';

/** Router metrics for the Node runtime, each registry owned by its process (no global default). */
export function createRouterMetrics(): MetricsPort & {
  sessionChanged(s: Session, previous: Session['status'] | null): void;
  agentsConnected(n: number): void;
} {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'router_' });
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
  return {
    contentType: registry.contentType,
    render: () => registry.metrics(),
    observeRequest: (method, route, status, seconds) => requests.observe({ method, route, status: String(status) }, seconds),
    sessionChanged: (s) => transitions.inc({ status: s.status }),
    agentsConnected: (n) => agents.set(n),
  };
}
