/**
 * An Upstash-REST-compatible endpoint in front of a real redis-server, for tests: the protocol that
 * @upstash/redis sends, read from its source — POST / with one command as a JSON array, POST
 * /pipeline and POST /multi-exec with an array of commands, `Authorization: Bearer <token>`, and with
 * `Upstash-Encoding: base64` every string in a result base64-encoded. Errors are `{error}` with 400
 * (401 for a bad token).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';

type Reply = Buffer | string | number | null | Reply[];

function encode(v: Reply | Error, base64: boolean): unknown {
  if (v instanceof Error) return v;
  if (Buffer.isBuffer(v)) return base64 ? v.toString('base64') : v.toString('utf8');
  if (typeof v === 'string') return base64 && v !== 'OK' ? Buffer.from(v).toString('base64') : v;
  if (Array.isArray(v)) return v.map((x) => encode(x, base64));
  // ioredis turns HGETALL into an object; Upstash (like Redis itself) answers with a flat array.
  if (v !== null && typeof v === 'object') return Object.entries(v as Record<string, Reply>).flatMap(([k, x]) => [encode(k, base64), encode(x, base64)]);
  return v;
}

const isCommand = (c: unknown): c is Array<string | number> => Array.isArray(c) && c.length > 0 && c.every((x) => typeof x === 'string' || typeof x === 'number');

export async function startUpstashRest(redisUrl: string, token: string): Promise<{ url: string; close(): Promise<void> }> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  };
  const run = async (cmd: Array<string | number>): Promise<Reply> => {
    const [name, ...args] = cmd;
    return (await redis.callBuffer(String(name), ...args.map(String))) as Reply;
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'POST') return send(res, 405, { error: 'only POST is served' });
    if (req.headers.authorization !== `Bearer ${token}`) return send(res, 401, { error: 'Unauthorized' });
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return send(res, 400, { error: 'ERR failed to parse command' });
    }
    const base64 = String(req.headers['upstash-encoding'] ?? '').toLowerCase() === 'base64';
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/' || path === '') {
      if (!isCommand(body)) return send(res, 400, { error: 'ERR command must be a non-empty array' });
      try {
        return send(res, 200, { result: encode(await run(body), base64) });
      } catch (err) {
        return send(res, 400, { error: (err as Error).message });
      }
    }
    if (path === '/pipeline' || path === '/multi-exec') {
      if (!Array.isArray(body) || !body.every(isCommand)) return send(res, 400, { error: 'ERR body must be an array of commands' });
      const batch = path === '/pipeline' ? redis.pipeline() : redis.multi();
      for (const [name, ...args] of body) batch.callBuffer(String(name), ...args.map(String));
      const results = (await batch.exec()) ?? [];
      return send(
        res,
        200,
        results.map(([err, v]) => (err ? { error: err.message } : { result: encode(v as Reply, base64) })),
      );
    }
    return send(res, 404, { error: `no endpoint ${path}` });
  };
  const server = createServer((req, res) => void handle(req, res).catch((err) => send(res, 500, { error: (err as Error).message })));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      redis.disconnect();
    },
  };
}
