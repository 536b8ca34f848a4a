import { Agent, request } from 'node:http';
import WebSocket from 'ws';

export type Stats = { p50: number; p99: number; mean: number; n: number };

export function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50: at(0.5), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length, n: s.length };
}

/** Keep-alive HTTP GETs from `concurrency` loops for `durationMs`; returns requests per second. */
export async function httpLoad(url: string, concurrency: number, durationMs: number, headers: Record<string, string> = {}): Promise<{ rps: number; errors: number }> {
  const u = new URL(url);
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  let done = 0;
  let errors = 0;
  const end = performance.now() + durationMs;
  const one = () =>
    new Promise<void>((resolve) => {
      const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, agent, headers }, (res) => {
        if (res.statusCode !== 200) errors++;
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end();
    });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await one();
        done++;
      }
    }),
  );
  const secs = (performance.now() - started) / 1000;
  agent.destroy();
  return { rps: done / secs, errors };
}

/** A CDP client on one WebSocket with a page attached (flat mode), for Runtime.evaluate timing. */
export async function cdpClient(wsUrl: string) {
  const ws = new WebSocket(wsUrl, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let nextId = 1;
  const waiting = new Map<number, (msg: { result?: any; error?: any }) => void>();
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.id !== undefined) waiting.get(msg.id)?.(msg);
    waiting.delete(msg.id);
  });
  const send = (method: string, params: object = {}, sessionId?: string) =>
    new Promise<any>((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, (m) => (m.error ? reject(new Error(JSON.stringify(m.error))) : resolve(m.result)));
      ws.send(JSON.stringify({ id, method, params, sessionId }));
    });
  const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
  const evaluate = () => send('Runtime.evaluate', { expression: '1 + 1', returnByValue: true }, sessionId);
  return {
    evaluate,
    async close() {
      await send('Target.closeTarget', { targetId }).catch(() => {});
      ws.close();
    },
  };
}

export async function cdpRoundTrips(c: Awaited<ReturnType<typeof cdpClient>>, n: number): Promise<Stats> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const r = await c.evaluate();
    if (r.result?.value !== 2) throw new Error('evaluate returned the wrong value');
    samples.push(performance.now() - t);
  }
  return stats(samples);
}

export async function cdpThroughput(c: Awaited<ReturnType<typeof cdpClient>>, inFlight: number, durationMs: number): Promise<number> {
  const end = performance.now() + durationMs;
  let done = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) {
        await c.evaluate();
        done++;
      }
    }),
  );
  return done / ((performance.now() - started) / 1000);
}
