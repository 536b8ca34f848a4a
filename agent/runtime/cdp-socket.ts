import WebSocket from 'ws';
import type { Clock } from '../../shared/clock.js';
import { CdpConnection } from './cdp-pipe.js';

/**
 * One short CDP exchange over a browser's WebSocket (`ws://host:port/path`): connect, send the
 * commands in order, answer their results, close. For images that serve CDP only on a WebSocket
 * (steel): readiness, and the DevTools HTTP answers made from CDP. Bounded by `timeoutMs` and `signal`.
 */
export function cdpExchange(url: string, commands: Array<{ method: string; params?: object }>, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(opts.signal.reason ?? new Error('aborted'));
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: opts.timeoutMs, maxPayload: 64 * 1024 * 1024 });
    const results: unknown[] = [];
    let settled = false;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      ws.terminate();
      if (err) reject(err);
      else resolve(results);
    };
    const onAbort = () => finish(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('aborted'));
    const timer = setTimeout(() => finish(new Error(`no CDP answer from ${url} within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const send = (i: number) => {
      if (i === commands.length) return finish(null);
      ws.send(JSON.stringify({ id: i + 1, method: commands[i]!.method, params: commands[i]!.params ?? {} }));
    };
    ws.on('open', () => send(0));
    ws.on('message', (data: Buffer) => {
      let msg: { id?: number; result?: unknown; error?: { message?: string } };
      try {
        msg = JSON.parse(data.toString());
      } catch {
        return finish(new Error('the browser sent a CDP message that is not JSON'));
      }
      if (msg.id !== results.length + 1) return; // an event
      if (msg.error) return finish(new Error(`${commands[results.length]!.method}: ${msg.error.message ?? 'failed'}`));
      results.push(msg.result);
      send(results.length);
    });
    ws.on('unexpected-response', (_req, res) => finish(new Error(`the browser refused the CDP WebSocket (${res.statusCode})`)));
    ws.on('error', (err) => finish(err));
    ws.on('close', () => finish(new Error('the browser closed the CDP WebSocket')));
  });
}

/** The largest message the agent's own CDP connection to a pod takes (it exchanges only small ones). */
const OWN_CONNECTION_MAX_PAYLOAD = 16 * 1024 * 1024;

/**
 * The agent's own lasting CDP connection to a browser that serves CDP on a WebSocket (a warm pod's):
 * what a claimed warm browser's option overrides ride on, held for the session's life.
 */
export class CdpWebSocket extends CdpConnection {
  private constructor(
    private readonly ws: WebSocket,
    clock: Clock,
  ) {
    super(clock);
    ws.on('message', (data: Buffer) => this.dispatch(data));
    ws.on('close', () => this.closed(new Error('the browser closed the CDP WebSocket')));
    ws.on('error', (err) => this.closed(err));
  }

  /** Resolves once connected; rejects within `timeoutMs`, on `signal`, or when the browser refuses. */
  static open(url: string, opts: { timeoutMs: number; signal?: AbortSignal; clock: Clock }): Promise<CdpWebSocket> {
    return new Promise((resolve, reject) => {
      if (opts.signal?.aborted) return reject(opts.signal.reason ?? new Error('aborted'));
      const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: opts.timeoutMs, maxPayload: OWN_CONNECTION_MAX_PAYLOAD });
      const fail = (err: Error) => {
        opts.signal?.removeEventListener('abort', onAbort);
        ws.terminate();
        reject(err);
      };
      const onAbort = () => fail(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('aborted'));
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      ws.once('unexpected-response', (_req, res) => fail(new Error(`the browser refused the CDP WebSocket (${res.statusCode})`)));
      ws.once('error', fail);
      ws.once('open', () => {
        opts.signal?.removeEventListener('abort', onAbort);
        ws.off('error', fail);
        resolve(new CdpWebSocket(ws, opts.clock));
      });
    });
  }

  send(message: string): boolean {
    if (this.isClosed) return true;
    this.ws.send(message);
    return true;
  }

  close(): void {
    this.ws.terminate();
    this.closed(new Error('closed by the agent'));
  }
}
