import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../shared/node-metrics.js';
import type { SessionStatus } from '../shared/session.js';

export type AgentMetrics = {
  registry: Registry;
  /** A session this agent now tracks: asked to start it, or adopted it from a previous agent. */
  sessionTracked(adopted: boolean): void;
  sessionFailed(): void;
  transition(from: SessionStatus, to: SessionStatus): void;
  observeReady(seconds: number): void;
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
