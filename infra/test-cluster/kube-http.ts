/** A small JSON client for the test tooling: token auth, the cluster CA, timeouts, and streaming watches. */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

export type KubeAccess = { server: string; caFile: string; token: string };

export class KubeHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what}: HTTP ${status} ${body.slice(0, 300)}`);
  }
}

export function kubeClient(access: KubeAccess) {
  const ca = readFileSync(access.caFile);
  const call = <T = any>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        `${access.server}${path}`,
        {
          method,
          ca,
          timeout: 15_000,
          // A fresh connection per call: simple, and no stale keep-alive sockets between tests.
          agent: false,
          headers: { authorization: `Bearer ${access.token}`, accept: 'application/json', ...(payload ? { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) } : {}) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            if ((res.statusCode ?? 0) >= 300) return reject(new KubeHttpError(res.statusCode ?? 0, text, `${method} ${path}`));
            resolve(text ? JSON.parse(text) : (undefined as T));
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });

  /** Streams watch events until `signal` aborts or the server ends the watch; resolves then. */
  const watch = (path: string, onEvent: (type: string, obj: any) => void, signal: AbortSignal): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = request(`${access.server}${path}`, { ca, signal, agent: false, headers: { authorization: `Bearer ${access.token}` } }, (res) => {
        if ((res.statusCode ?? 0) >= 300) {
          res.resume();
          return reject(new KubeHttpError(res.statusCode ?? 0, '', `WATCH ${path}`));
        }
        let buf = '';
        res.on('data', (c: Buffer) => {
          buf += c.toString();
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.trim()) {
              const ev = JSON.parse(line);
              onEvent(ev.type, ev.object);
            }
          }
        });
        res.on('end', () => resolve());
        res.on('error', () => resolve());
      });
      req.on('error', (err) => (signal.aborted ? resolve() : reject(err)));
      req.end();
    });

  return { call, watch };
}
export type KubeClient = ReturnType<typeof kubeClient>;
