/** A small JSON client for the test tooling: token auth, the cluster CA, timeouts, and streaming watches. */
import { readFileSync } from 'node:fs';
import { request, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

/** A bearer token and CA file, or a whole kubeconfig (any auth it supports: certs, exec plugins…). */
export type KubeAccess = { server: string; caFile: string; token: string } | { kubeconfig: KubeConfig };

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
  const server = 'kubeconfig' in access ? access.kubeconfig.getCurrentCluster()!.server : access.server;
  const ca = 'kubeconfig' in access ? undefined : readFileSync(access.caFile);
  /** Request options with credentials; a fresh connection per call, so no stale keep-alive sockets. */
  const options = async (method: string, headers: Record<string, string | number>): Promise<RequestOptions> => {
    const opts: RequestOptions = { method, agent: false, timeout: 15_000, headers: { accept: 'application/json', ...headers } };
    if ('kubeconfig' in access) await access.kubeconfig.applyToHTTPSOptions(opts);
    else {
      opts.ca = ca;
      opts.headers = { ...opts.headers, authorization: `Bearer ${access.token}` };
    }
    return opts;
  };
  const call = async <T = any>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const opts = await options(method, payload ? { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) } : {});
    return new Promise((resolve, reject) => {
      const req = request(`${server}${path}`, opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if ((res.statusCode ?? 0) >= 300) return reject(new KubeHttpError(res.statusCode ?? 0, text, `${method} ${path}`));
          resolve(text ? JSON.parse(text) : (undefined as T));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  };

  /** Streams watch events until `signal` aborts or the server ends the watch; resolves then. */
  const watch = async (path: string, onEvent: (type: string, obj: any) => void, signal: AbortSignal): Promise<void> => {
    const opts = { ...(await options('GET', {})), timeout: undefined, signal };
    return new Promise((resolve, reject) => {
      const req = request(`${server}${path}`, opts, (res) => {
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
  };

  return { call, watch, server };
}
export type KubeClient = ReturnType<typeof kubeClient>;
