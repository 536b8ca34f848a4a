import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';

export type Balancer = {
  url: string;
  port: number;
  /** How many connections each backend was given (by index), to check that all of them served. */
  served: number[];
  close(): Promise<void>;
};

const CONNECT_TIMEOUT_MS = 2000;

/**
 * A round-robin TCP load balancer on loopback, like a cloud L4 balancer in front of router replicas:
 * each new connection goes to the next backend; a backend that refuses or does not answer is skipped
 * for that connection (a passive health check), so a killed replica costs nothing but its own sockets.
 */
export async function startBalancer(backends: () => Array<{ host: string; port: number }>): Promise<Balancer> {
  const sockets = new Set<Socket>();
  const served: number[] = [];
  let next = 0;
  const track = (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  const server = createServer((client) => {
    track(client);
    client.pause();
    const list = backends();
    const tryBackend = (tries: number) => {
      if (tries >= list.length || client.destroyed) return void client.destroy();
      const index = next++ % list.length;
      const target = list[index]!;
      const upstream = connect({ host: target.host, port: target.port });
      track(upstream);
      let connected = false;
      const timer = setTimeout(() => upstream.destroy(new Error('connect timeout')), CONNECT_TIMEOUT_MS);
      upstream.on('error', () => {
        clearTimeout(timer);
        if (connected) client.destroy();
        else tryBackend(tries + 1);
      });
      upstream.once('connect', () => {
        connected = true;
        clearTimeout(timer);
        served[index] = (served[index] ?? 0) + 1;
        upstream.setNoDelay(true);
        client.setNoDelay(true);
        client.pipe(upstream);
        upstream.pipe(client);
        client.once('close', () => upstream.destroy());
        upstream.once('close', () => client.destroy());
        client.on('error', () => upstream.destroy());
        client.resume();
      });
    };
    tryBackend(0);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    served,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** One HTTP request on a connection of its own (no keep-alive), so a TCP balancer picks a backend for each. */
export function requestOnce(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: any }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: init.method ?? 'GET', headers: init.headers, agent: false, timeout: init.timeoutMs ?? 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: the text itself
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} in time`)));
    req.on('error', reject);
    req.end(init.body);
  });
}
