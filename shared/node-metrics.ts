import { collectDefaultMetrics, type Registry } from 'prom-client';

/**
 * prom-client's process and Node.js metrics under `prefix`, less three gauges whose `_total` names
 * break Prometheus' naming rules (promtool's lint refuses them): `nodejs_active_{handles,requests,
 * resources}` carry the same numbers, by type.
 */
export function collectProcessMetrics(registry: Registry, prefix: string): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total']) registry.removeSingleMetric(`${prefix}nodejs_${name}`);
}
