import type { FleetCounts } from '../store/types.js';

/** How long a scrape waits for the store's fleet counts before it answers without them. */
export const FLEET_READ_TIMEOUT_MS = 2000;

const FAMILIES = [
  { name: 'browser_sessions_total', type: 'counter', help: 'Sessions created, whole fleet, by cluster (from the store)', value: (c: FleetCounts[number]) => c.created },
  {
    name: 'browser_sessions_failed_total',
    type: 'counter',
    help: 'Sessions that ended failed, whole fleet, by cluster (from the store)',
    value: (c: FleetCounts[number]) => c.failed,
  },
  {
    name: 'browser_sessions_running',
    type: 'gauge',
    help: 'Sessions with a running browser, whole fleet, by cluster (from the store)',
    value: (c: FleetCounts[number]) => c.running,
  },
  {
    name: 'browser_sessions_pending',
    type: 'gauge',
    help: 'Sessions whose browser is starting, whole fleet, by cluster (from the store)',
    value: (c: FleetCounts[number]) => c.pending,
  },
] as const;

const label = (value: string) => value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

/**
 * The specification's four session metrics for the whole fleet, in Prometheus' text format: every
 * router replica (Node or Worker) reads the same store, so any one of them answers for all.
 */
export function renderFleetMetrics(counts: FleetCounts): string {
  return (
    FAMILIES.map((f) =>
      [`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`, ...counts.map((c) => `${f.name}{cluster="${label(c.cluster)}"} ${f.value(c)}`)].join('\n'),
    ).join('\n') + '\n'
  );
}
