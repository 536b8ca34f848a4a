import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../shared/node-metrics.js';
import type { SessionStatus } from '../shared/session.js';
import type { WarmPoolMetrics } from './runtime/warm-pool.js';

export type AgentMetrics = {
  registry: Registry;
  /** A session this agent now tracks: asked to start it, or adopted it from a previous agent. */
  sessionTracked(adopted: boolean): void;
  sessionFailed(): void;
  transition(from: SessionStatus, to: SessionStatus): void;
  observeReady(seconds: number): void;
  warmPool: WarmPoolMetrics;
  /** Where the pool gauges read from (the runtime's pool, once there is one). */
  readWarmPool(read: () => { idle: number; held: number; target: number } | null): void;
};

export function createAgentMetrics(): AgentMetrics {
  const registry = new Registry();
  collectProcessMetrics(registry, 'agent_');
  const total = new Counter({ name: 'browser_sessions_total', help: 'Sessions this agent was asked to start', registers: [registry] });
  const running = new Gauge({ name: 'browser_sessions_running', help: 'Sessions with a ready browser', registers: [registry] });
  const pending = new Gauge({ name: 'browser_sessions_pending', help: 'Sessions whose browser is starting', registers: [registry] });
  const failed = new Counter({ name: 'browser_sessions_failed_total', help: 'Sessions that ended failed', registers: [registry] });
  const ready = new Histogram({
    name: 'browser_session_create_to_ready_seconds',
    help: 'From the start request to a browser answering CDP',
    buckets: [0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60],
    registers: [registry],
  });
  const gauges: Partial<Record<SessionStatus, Gauge>> = { running, pending };
  let pool: () => { idle: number; held: number; target: number } | null = () => null;
  const poolGauge = (name: string, help: string, pick: (p: { idle: number; held: number; target: number }) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const p = pool();
        this.set(p ? pick(p) : 0);
      },
    });
  poolGauge('browser_warm_pool_size', 'Warm browsers held: ready ones and one launching', (p) => p.held);
  poolGauge('browser_warm_pool_idle', 'Warm browsers ready to be claimed', (p) => p.idle);
  poolGauge('browser_warm_pool_target', 'Warm browsers the pool aims to keep ready now (follows demand)', (p) => p.target);
  const claims = new Counter({
    name: 'browser_warm_pool_claims_total',
    help: 'Session starts that asked the warm pool, by outcome (hit: got a warm browser; miss: launched one)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  for (const outcome of ['hit', 'miss']) claims.inc({ outcome }, 0);
  const reaped = new Counter({
    name: 'browser_warm_pool_reaped_total',
    help: 'Warm browsers destroyed unclaimed: idle too long, dead, or above the target',
    registers: [registry],
  });
  const refill = new Histogram({
    name: 'browser_warm_pool_refill_seconds',
    help: 'Time to launch one warm browser',
    buckets: [0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30],
    registers: [registry],
  });
  return {
    registry,
    sessionTracked: (adopted) => {
      if (!adopted) total.inc();
      pending.inc();
    },
    sessionFailed: () => failed.inc(),
    transition: (from, to) => {
      if (from === to) return;
      gauges[from]?.dec();
      gauges[to]?.inc();
    },
    observeReady: (s) => ready.observe(s),
    warmPool: {
      claimed: (hit) => claims.inc({ outcome: hit ? 'hit' : 'miss' }),
      refilled: (seconds) => refill.observe(seconds),
      reaped: () => reaped.inc(),
    },
    readWarmPool: (read) => {
      pool = read;
    },
  };
}

/**
 * The agent's own HTTP port: `/metrics`, `/livez` (the process answers: liveness never depends on the
 * router, so a router outage restarts no agent and drops no browser) and `/readyz` (the tunnel is up).
 */
export async function serveMetrics(
  metrics: AgentMetrics,
  host: string,
  port: number,
  ready: () => boolean,
  /** Take any free port when `port` is taken (`npm start`, where the port was a default, not a choice). */
  anyPortIfTaken = false,
): Promise<{ server: Server; port: number; tookAnotherPort: boolean; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') {
      metrics.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
        () => res.writeHead(500).end(),
      );
    } else if (req.url === '/livez') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    } else if (req.url === '/readyz') {
      const up = ready();
      res.writeHead(up ? 200 : 503, { 'content-type': 'text/plain' }).end(up ? 'ok' : 'tunnel not connected');
    } else res.writeHead(404).end();
  });
  const listen = (p: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  let tookAnotherPort = false;
  try {
    await listen(port);
  } catch (err) {
    if (!anyPortIfTaken || port === 0 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    await listen(0);
    tookAnotherPort = true;
  }
  return {
    server,
    tookAnotherPort,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
