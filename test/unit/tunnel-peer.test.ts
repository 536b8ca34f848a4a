import { describe, expect, it } from 'vitest';
import { createLogger } from '../../shared/logger.js';
import { decodeFrame, encodeFrame } from '../../shared/tunnel/frames.js';
import { AppError } from '../../shared/errors.js';
import { TunnelPeer, type RpcHandlers } from '../../shared/tunnel/peer.js';
import type { StreamSpec } from '../../shared/tunnel/protocol.js';
import type { TunnelStream } from '../../shared/tunnel/stream.js';
import { ManualClock } from '../helpers/clock.js';

const logger = createLogger({ level: 'silent' });
const spec: StreamSpec = { sessionId: 's1', kind: 'ws', method: 'GET', path: '/x', headers: {}, target: 'api' };

/** Two peers joined back to back; delivery is synchronous unless `hold` is set. */
function pair(opts: { handlers?: RpcHandlers; onStreamOpen?: (s: TunnelStream, spec: StreamSpec) => void; windowBytes?: number } = {}) {
  const clock = new ManualClock();
  const sent = { a: 0, b: 0 };
  const peers: { a?: TunnelPeer; b?: TunnelPeer } = {};
  const deliver = (to: () => TunnelPeer, key: 'a' | 'b') => (d: string | Uint8Array) => {
    sent[key]++;
    queueMicrotask(() => to().receive(d));
  };
  const a = new TunnelPeer({
    transport: { send: deliver(() => peers.b!, 'a'), close: () => peers.b!.handleTransportClosed('AGENT_DISCONNECTED', 'closed') },
    clock,
    logger,
    windowBytes: opts.windowBytes,
  });
  const b = new TunnelPeer({
    transport: { send: deliver(() => a, 'b'), close: () => a.handleTransportClosed('AGENT_DISCONNECTED', 'closed') },
    clock,
    logger,
    handlers: opts.handlers,
    onStreamOpen: opts.onStreamOpen,
    windowBytes: opts.windowBytes,
  });
  peers.b = b;
  return { a, b, clock, sent };
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe('frames', () => {
  it('round-trips kind, stream id and payload', () => {
    const f = decodeFrame(encodeFrame('binary', 0xfffffffe, new Uint8Array([1, 2, 3])));
    expect(f).toEqual({ kind: 'binary', sid: 0xfffffffe, payload: new Uint8Array([1, 2, 3]) });
  });
  it('rejects short frames, unknown kinds and stream 0', () => {
    expect(decodeFrame(new Uint8Array([1, 0, 0]))).toBeNull();
    expect(decodeFrame(new Uint8Array([9, 0, 0, 0, 1]))).toBeNull();
    expect(decodeFrame(new Uint8Array([1, 0, 0, 0, 0]))).toBeNull();
  });
});

describe('TunnelPeer RPC', () => {
  it('answers a call with the validated result', async () => {
    const { a } = pair({ handlers: { 'agent.sync': async ({ running }) => ({ stop: running.filter((id) => id.startsWith('x')), rebuilt: [] }) } });
    await expect(a.call('agent.sync', { running: ['x1', 'y1'], snapshots: [] }, 1000)).resolves.toEqual({ stop: ['x1'], rebuilt: [] });
  });

  it('carries a handler error back as the same AppError, code and status intact', async () => {
    const { a } = pair({
      handlers: {
        'session.stop': async () => {
          throw new AppError('SESSION_NOT_RUNNING', 'nope', { details: { status: 'failed' } });
        },
      },
    });
    const err = await a.call('session.stop', { id: 'x', reason: 'deleted' }, 1000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect(err).toMatchObject({ code: 'SESSION_NOT_RUNNING', status: 409, message: 'nope', details: { status: 'failed' } });
  });

  it('keeps what a handler throws that is not an AppError on its own side', async () => {
    const { a } = pair({
      handlers: {
        'session.stop': async () => {
          throw Object.assign(new Error('ENOENT: /var/secret/path'), { code: 'SESSION_NOT_RUNNING' });
        },
      },
    });
    await expect(a.call('session.stop', { id: 'x', reason: 'deleted' }, 1000)).rejects.toMatchObject({ code: 'INTERNAL', status: 500, message: 'internal error' });
  });

  it('rejects invalid params before the handler runs', async () => {
    let ran = false;
    const { a } = pair({ handlers: { 'agent.sync': async () => ((ran = true), { stop: [], rebuilt: [] }) } });
    await expect(a.call('agent.sync', { running: 'no' } as never, 1000)).rejects.toMatchObject({ code: 'VALIDATION_FAILED' });
    expect(ran).toBe(false);
  });

  it('fails a call at its deadline, driven by the clock', async () => {
    const { a, clock } = pair({ handlers: { 'agent.sync': () => new Promise(() => {}) } });
    const p = a.call('agent.sync', { running: [], snapshots: [] }, 500);
    await flush();
    clock.advance(499);
    let settled = false;
    void p.catch(() => (settled = true));
    await flush();
    expect(settled).toBe(false);
    clock.advance(1);
    await expect(p).rejects.toMatchObject({ code: 'TIMEOUT' });
  });

  it('fails every pending call when the transport closes', async () => {
    const { a } = pair({ handlers: { 'agent.sync': () => new Promise(() => {}) } });
    const p1 = a.call('agent.sync', { running: [], snapshots: [] }, 10_000);
    const p2 = a.call('agent.sync', { running: [], snapshots: [] }, 10_000);
    a.handleTransportClosed('AGENT_DISCONNECTED', 'agent went away');
    await expect(p1).rejects.toBeInstanceOf(AppError);
    await expect(p2).rejects.toMatchObject({ code: 'AGENT_DISCONNECTED' });
    await expect(a.call('agent.sync', { running: [], snapshots: [] }, 10)).rejects.toMatchObject({ code: 'AGENT_DISCONNECTED' });
  });

  it('drops garbage without throwing', () => {
    const { a } = pair();
    expect(() => a.receive('not json')).not.toThrow();
    expect(() => a.receive('{"t":"call","id":-1}')).not.toThrow();
    expect(() => a.receive(new Uint8Array([7]))).not.toThrow();
  });
});

describe('TunnelPeer streams', () => {
  it('keeps text and binary messages apart and in order, many streams at once', async () => {
    const got: Array<[number, string, string]> = [];
    const { a } = pair({
      onStreamOpen: (s) => {
        s.onData = (kind, p) => {
          got.push([s.sid, kind, new TextDecoder().decode(p)]);
          s.consumed(p.byteLength);
        };
        s.accept({ status: 101, headers: [] });
        s.start();
      },
    });
    const s1 = a.openStream(spec);
    const s2 = a.openStream(spec);
    expect(await s1.head).toMatchObject({ status: 101 });
    await s2.head;
    s1.write('text', new TextEncoder().encode('one'));
    s2.write('binary', new TextEncoder().encode('two'));
    s1.write('binary', new TextEncoder().encode('three'));
    await flush();
    expect(got).toEqual([
      [s1.sid, 'text', 'one'],
      [s2.sid, 'binary', 'two'],
      [s1.sid, 'binary', 'three'],
    ]);
  });

  it('stops a writer at its window and resumes it when the reader consumes', async () => {
    let reader!: TunnelStream;
    const { a } = pair({
      windowBytes: 1000,
      onStreamOpen: (s) => {
        reader = s;
        s.onData = () => {};
        s.accept({ status: 101, headers: [] });
        s.start();
      },
    });
    const w = a.openStream(spec);
    await w.head;
    let drained = 0;
    w.onDrain = () => drained++;
    expect(w.write('binary', new Uint8Array(600))).toBe(true);
    expect(w.write('binary', new Uint8Array(600))).toBe(false);
    await flush();
    reader.consumed(200);
    await flush();
    expect(drained).toBe(0); // 200 is below the credit batch (window/4 = 250)
    reader.consumed(100);
    await flush();
    expect(drained).toBe(1);
  });

  it('queues a body larger than the window and delivers it whole, in order, then the end', async () => {
    const received: Uint8Array[] = [];
    let ended = false;
    let reader!: TunnelStream;
    const { a } = pair({
      windowBytes: 100_000,
      onStreamOpen: (s) => {
        reader = s;
        s.onData = (_k, p) => received.push(p);
        s.onEnd = () => (ended = true);
        s.accept({ status: 200, headers: [] });
        s.start();
      },
    });
    const w = a.openStream({ ...spec, kind: 'http' });
    await w.head;
    const body = new Uint8Array(350_000).map((_, i) => i & 0xff);
    expect(w.write('data', body)).toBe(false);
    w.end();
    await flush();
    const total = () => received.reduce((n, p) => n + p.byteLength, 0);
    // A frame starts only while the window is open, so it overshoots by one frame at most.
    expect(total()).toBeLessThanOrEqual(100_000 + 64 * 1024);
    expect(received.every((p) => p.byteLength <= 64 * 1024)).toBe(true);
    let acked = 0;
    for (let i = 0; i < 20 && !ended; i++) {
      reader.consumed(total() - acked);
      acked = total();
      await flush();
      await flush();
    }
    expect(ended).toBe(true);
    const joined = new Uint8Array(total());
    let at = 0;
    for (const p of received) {
      joined.set(p, at);
      at += p.byteLength;
    }
    expect(joined).toEqual(body);
  });

  it('closes a stream whose peer ignores the window', async () => {
    let closedWith: number | undefined;
    const { a } = pair({
      windowBytes: 100,
      onStreamOpen: (s) => {
        s.onData = () => {};
        s.onClose = (code) => (closedWith = code);
        s.accept({ status: 101, headers: [] });
        s.start();
      },
    });
    const w = a.openStream(spec);
    await w.head;
    for (let i = 0; i < 5; i++) {
      // Pretend to be a peer that ignores its window.
      (w as unknown as { sendWindow: number }).sendWindow = 1e9;
      w.write('binary', new Uint8Array(100));
    }
    await flush();
    expect(closedWith).toBe(1008);
  });

  it('propagates a close with code and reason', async () => {
    let reason: string | undefined;
    const { a } = pair({
      onStreamOpen: (s) => {
        s.accept({ status: 101, headers: [] });
        s.start();
        queueMicrotask(() => s.close(4001, 'session deleted'));
      },
    });
    const s = a.openStream(spec);
    s.onClose = (_c, r) => (reason = r);
    await s.head;
    await flush();
    await flush();
    expect(reason).toBe('session deleted');
    expect(a.openStreams).toBe(0);
  });

  it('rejects the head of a stream the other side refused', async () => {
    const { a } = pair({ onStreamOpen: (s) => s.reject(new AppError('SESSION_NOT_RUNNING', 'no')) });
    await expect(a.openStream(spec).head).rejects.toMatchObject({ code: 'SESSION_NOT_RUNNING', status: 409 });
  });

  it('aborts open streams when the tunnel drops', async () => {
    const { a } = pair({ onStreamOpen: (s) => s.start() });
    const s = a.openStream(spec);
    let closed = false;
    s.onClose = () => (closed = true);
    a.handleTransportClosed('AGENT_DISCONNECTED', 'gone');
    await expect(s.head).rejects.toMatchObject({ code: 'AGENT_DISCONNECTED' });
    expect(closed).toBe(true);
  });
});

describe('TunnelPeer heartbeat', () => {
  it('pings while the peer answers, and closes the link when it goes silent', async () => {
    const clock = new ManualClock();
    let closed: string | null = null;
    const sent: string[] = [];
    const p = new TunnelPeer({
      transport: { send: (d) => void sent.push(String(d)), close: (_c, r) => (closed = r) },
      clock,
      logger,
      heartbeatMs: 1000,
      deadAfterMs: 3000,
    });
    clock.advance(1000);
    expect(sent.some((s) => s.includes('"ping"'))).toBe(true);
    p.receive(JSON.stringify({ t: 'pong', ts: 1 }));
    clock.advance(2000);
    expect(closed).toBeNull();
    clock.advance(2500);
    expect(closed).toBe('heartbeat timeout');
    expect(p.isClosed).toBe(true);
  });
});

describe('TunnelPeer bounds', () => {
  it('refuses streams beyond its cap with 429 TOO_MANY_CONNECTIONS, either way, and takes new ones once some close', async () => {
    const clock = new ManualClock();
    const accepted: TunnelStream[] = [];
    const peers: { opener?: TunnelPeer; acceptor?: TunnelPeer } = {};
    const link = (to: () => TunnelPeer) => ({ send: (d: string | Uint8Array) => queueMicrotask(() => to().receive(d)), close: () => {} });
    // The opener allows more than the acceptor, so the acceptor's own check is what refuses.
    peers.opener = new TunnelPeer({ transport: link(() => peers.acceptor!), clock, logger, maxStreams: 10 });
    peers.acceptor = new TunnelPeer({
      transport: link(() => peers.opener!),
      clock,
      logger,
      maxStreams: 2,
      onStreamOpen: (s) => {
        accepted.push(s);
        s.accept({ status: 101, headers: [] });
        s.start();
      },
    });
    const [s1, s2] = [peers.opener.openStream(spec), peers.opener.openStream(spec)];
    await Promise.all([s1.head, s2.head]);
    const s3 = peers.opener.openStream(spec);
    const refused = await s3.head.catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AppError);
    expect(refused).toMatchObject({ code: 'TOO_MANY_CONNECTIONS', status: 429 });
    expect(accepted).toHaveLength(2);
    // One closes: a new stream gets through.
    s1.close(1000, 'done');
    await flush();
    await expect(peers.opener.openStream(spec).head).resolves.toMatchObject({ status: 101 });
    expect(accepted).toHaveLength(3);
    // The opening side checks its own cap before sending anything.
    const small = new TunnelPeer({ transport: { send: () => {}, close: () => {} }, clock, logger, maxStreams: 1 });
    small.openStream(spec);
    expect(() => small.openStream(spec)).toThrow(expect.objectContaining({ code: 'TOO_MANY_CONNECTIONS' }));
  });

  it('logs what a peer can provoke at a bounded rate, then says how much it held back', () => {
    const clock = new ManualClock();
    const lines: Array<Record<string, unknown>> = [];
    const counting = createLogger({ level: 'warn', write: (l) => void lines.push(JSON.parse(l)), now: () => clock.now() });
    const p = new TunnelPeer({ transport: { send: () => {}, close: () => {} }, clock, logger: counting, heartbeatMs: 0 });
    for (let i = 0; i < 100; i++) p.receive(new Uint8Array([9, 9]));
    for (let i = 0; i < 20; i++) p.receive('not json');
    expect(lines).toHaveLength(5);
    expect(lines.every((l) => l.msg === 'tunnel: dropped a malformed binary frame')).toBe(true);
    clock.advance(60_000);
    p.receive('not json');
    expect(lines).toHaveLength(6);
    expect(lines[5]).toMatchObject({ msg: 'tunnel: dropped a control message that is not JSON', suppressedBefore: 115 });
    expect(p.isClosed).toBe(false);
  });
});
