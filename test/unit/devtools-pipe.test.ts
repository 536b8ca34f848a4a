import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CdpPipe } from '../../agent/runtime/cdp-pipe.js';
import { DevtoolsMux } from '../../agent/runtime/devtools-mux.js';
import { acceptWebSocket } from '../../agent/ws-endpoint.js';
import type { StreamSpec } from '../../shared/tunnel/protocol.js';
import { TunnelStream, type StreamWire } from '../../shared/tunnel/stream.js';
import { ManualClock } from '../helpers/clock.js';

/** The browser's end of a pipe: what the agent wrote (NUL-split), and a way to answer. */
function fakeBrowser() {
  const toBrowser = new PassThrough();
  const fromBrowser = new PassThrough();
  const received: any[] = [];
  let pending = '';
  toBrowser.on('data', (d: Buffer) => {
    pending += d.toString();
    let i: number;
    while ((i = pending.indexOf('\0')) !== -1) {
      received.push(JSON.parse(pending.slice(0, i)));
      pending = pending.slice(i + 1);
    }
  });
  const clock = new ManualClock();
  const pipe = new CdpPipe(toBrowser, fromBrowser, clock);
  const flush = () => new Promise((r) => setImmediate(r));
  return { pipe, clock, received, flush, say: (text: string) => fromBrowser.write(text), end: () => fromBrowser.end() };
}

/** A client whose messages are collected as parsed JSON. */
function collectingClient() {
  const got: any[] = [];
  return { got, client: { send: (m: Buffer) => (got.push(JSON.parse(m.toString())), true), onceWritable: (fn: () => void) => fn() } };
}

describe('CDP pipe framing and routing', () => {
  it('reassembles messages split across chunks and several in one chunk; routes by the session suffix; answers root calls', async () => {
    const b = fakeBrowser();
    const routed: string[] = [];
    b.pipe.route('S1', (m, at) => routed.push(`${m.subarray(0, at).toString()}|${m.subarray(at).toString()}`));
    const answer = b.pipe.call('Browser.getVersion', {}, 1000);
    await b.flush();
    expect(b.received).toEqual([{ id: 1, method: 'Browser.getVersion', params: {} }]);
    b.say('{"id":1,"result":{"product":"Chrome/1"}}\0{"method":"X.y","params":{"a":"b"},"sess');
    b.say('ionId":"S1"}\0{"method":"Z","sessionId":"UNKNOWN"}\0');
    expect(await answer).toEqual({ product: 'Chrome/1' });
    expect(routed).toEqual(['{"method":"X.y","params":{"a":"b"}|,"sessionId":"S1"}']);
  });

  it('a sessionId inside a payload string is not a route: only the last key counts', async () => {
    const b = fakeBrowser();
    const routed: string[] = [];
    b.pipe.route('S1', () => routed.push('S1'));
    b.say('{"method":"Runtime.consoleAPICalled","params":{"text":"\\",\\"sessionId\\":\\"S1\\"}"}}\0');
    await b.flush();
    expect(routed).toEqual([]);
  });

  it('a call without an answer rejects at its deadline; a closed pipe rejects every call in flight', async () => {
    const b = fakeBrowser();
    const late = b.pipe.call('Target.getTargets', {}, 500);
    b.clock.advance(501);
    await expect(late).rejects.toThrow(/no answer within 500 ms/);
    const inFlight = b.pipe.call('Target.getTargets', {}, 5000);
    b.end();
    await expect(inFlight).rejects.toThrow(/closed its DevTools pipe/);
    await expect(b.pipe.call('Browser.getVersion', {}, 10)).rejects.toThrow();
  });
});

describe('DevTools multiplexer: one session per client, the policy on every command', () => {
  const policy = { profileDir: '/tmp/bso-chromium-x', downloadDir: '/tmp/bso-chromium-x/Downloads', maxConnections: 2 };

  async function connected() {
    const b = fakeBrowser();
    const mux = new DevtoolsMux(b.pipe, policy, async () => ({ domains: [] }));
    const c = collectingClient();
    const connecting = mux.connect('/devtools/browser/any-id', c.client);
    await b.flush();
    expect(b.received.at(-1)).toMatchObject({ method: 'Target.attachToBrowserTarget' });
    b.say(`{"id":${b.received.at(-1).id},"result":{"sessionId":"ROOT"}}\0`);
    const conn = await connecting;
    return { b, mux, conn, ...c };
  }

  it('commands travel on the client’s own session; its answers come back without the id it never saw', async () => {
    const { b, conn, got } = await connected();
    conn.receive(Buffer.from('{"id":7,"method":"Target.getTargets"}'));
    await b.flush();
    expect(b.received.at(-1)).toEqual({ id: 7, method: 'Target.getTargets', sessionId: 'ROOT' });
    b.say('{"id":7,"result":{"targetInfos":[]},"sessionId":"ROOT"}\0');
    await b.flush();
    expect(got).toEqual([{ id: 7, result: { targetInfos: [] } }]);
  });

  it('sessions the client attaches are its own and pass untouched; another session id is refused', async () => {
    const { b, conn, got } = await connected();
    b.say('{"method":"Target.attachedToTarget","params":{"sessionId":"CHILD","targetInfo":{}},"sessionId":"ROOT"}\0');
    await b.flush();
    conn.receive(Buffer.from('{"id":8,"method":"Runtime.evaluate","params":{"expression":"1"},"sessionId":"CHILD"}'));
    await b.flush();
    expect(b.received.at(-1)).toMatchObject({ id: 8, sessionId: 'CHILD' });
    b.say('{"id":8,"result":{"result":{"value":1}},"sessionId":"CHILD"}\0');
    conn.receive(Buffer.from('{"id":9,"method":"Runtime.evaluate","sessionId":"SOMEONE-ELSES"}'));
    await b.flush();
    expect(got.at(-2)).toEqual({ id: 8, result: { result: { value: 1 } }, sessionId: 'CHILD' });
    expect(got.at(-1)).toMatchObject({ id: 9, error: { code: -32001 } });
    expect(b.received.some((m) => m.sessionId === 'SOMEONE-ELSES')).toBe(false);
  });

  it.each([
    ['Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: '/etc/cron.d' }],
    ['Page.setDownloadBehavior', { behavior: 'allow', downloadPath: '/tmp/x' }],
  ])('%s: downloads are confined to the profile whatever path is asked', async (method, params) => {
    const { b, conn } = await connected();
    conn.receive(Buffer.from(JSON.stringify({ id: 3, method, params })));
    await b.flush();
    expect(b.received.at(-1).params.downloadPath).toBe(policy.downloadDir);
  });

  it.each([['/etc/passwd'], ['/tmp/bso-chromium-x/../../etc/passwd'], ['relative/../../../etc/shadow']])('DOM.setFileInputFiles with %s is refused', async (file) => {
    const { b, conn, got } = await connected();
    const before = b.received.length;
    conn.receive(Buffer.from(JSON.stringify({ id: 4, method: 'DOM.setFileInputFiles', params: { files: [file], nodeId: 1 } })));
    await b.flush();
    expect(b.received.length).toBe(before);
    expect(got.at(-1)).toMatchObject({ id: 4, error: { message: expect.stringMatching(/outside the session profile/) } });
  });

  it('malformed commands are answered with an error, never forwarded; a closed client detaches its session', async () => {
    const { b, conn, got } = await connected();
    const before = b.received.length;
    conn.receive(Buffer.from('not json'));
    conn.receive(Buffer.from('{"id":"x","method":1}'));
    await b.flush();
    expect(b.received.length).toBe(before);
    expect(got.map((m) => m.error.code)).toEqual([-32700, -32600]);
    conn.close();
    await b.flush();
    expect(b.received.at(-1)).toMatchObject({ method: 'Target.detachFromTarget', params: { sessionId: 'ROOT' } });
    b.say('{"method":"Late.event","sessionId":"ROOT"}\0');
    await b.flush();
    expect(got).toHaveLength(2);
  });

  it('refuses connections beyond its cap and paths that are not DevTools endpoints', async () => {
    const { mux } = await connected();
    await expect(mux.connect('/not/devtools', collectingClient().client)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const second = mux.connect('/devtools/page/T1', collectingClient().client);
    await expect(mux.connect('/devtools/browser/x', collectingClient().client)).rejects.toMatchObject({ code: 'TOO_MANY_CONNECTIONS', status: 429 });
    second.catch(() => {});
  });
});

describe('a WebSocket ended at the agent (raw upgrade bytes)', () => {
  function rawStream() {
    const frames: Buffer[] = [];
    const controls: any[] = [];
    const wire: StreamWire = { sendFrame: (_k, _sid, p) => void frames.push(Buffer.from(p)), sendControl: (m) => void controls.push(m), forget: () => {} };
    const stream = new TunnelStream(1, wire, 1 << 20);
    const spec: StreamSpec = {
      sessionId: 's-12345678',
      kind: 'upgrade',
      method: 'GET',
      path: '/devtools/browser',
      headers: { 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
      target: 'api',
    };
    return { stream, spec, frames, controls };
  }
  /** A masked client frame (FIN, text). */
  function clientFrame(payload: Buffer): Buffer {
    const mask = Buffer.from([1, 2, 3, 4]);
    const n = payload.length;
    const head =
      n < 126
        ? Buffer.from([0x81, 0x80 | n])
        : n < 65536
          ? Buffer.from([0x81, 0x80 | 126, n >> 8, n & 0xff])
          : Buffer.concat([
              Buffer.from([0x81, 0x80 | 127]),
              (() => {
                const b = Buffer.alloc(8);
                b.writeBigUInt64BE(BigInt(n));
                return b;
              })(),
            ]);
    return Buffer.concat([head, mask, Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!))]);
  }

  it('answers the handshake (RFC 6455 accept), delivers messages, frames replies unmasked', () => {
    const { stream, spec, frames, controls } = rawStream();
    const messages: string[] = [];
    const ep = acceptWebSocket(stream, spec, { onMessage: (d, consumed) => (messages.push(d.toString()), consumed()), onClose: () => {} }, { maxPayload: 1024 })!;
    expect(controls[0]).toMatchObject({ t: 'opened', status: 101, headers: expect.arrayContaining([['sec-websocket-accept', 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=']]) });
    stream.receiveFrame('data', clientFrame(Buffer.from('{"id":1}')));
    expect(messages).toEqual(['{"id":1}']);
    ep.send(Buffer.from('hello'));
    expect(Buffer.concat(frames)).toEqual(Buffer.concat([Buffer.from([0x81, 5]), Buffer.from('hello')]));
  });

  it('a message over the cap closes with 1009 and is never delivered', async () => {
    const { stream, spec, frames, controls } = rawStream();
    const messages: Buffer[] = [];
    acceptWebSocket(stream, spec, { onMessage: (d, consumed) => (messages.push(d), consumed()), onClose: () => {} }, { maxPayload: 1024 });
    stream.receiveFrame('data', clientFrame(Buffer.alloc(4096, 0x61)));
    await new Promise((r) => setImmediate(r)); // the parser reports its error on the next tick
    expect(messages).toEqual([]);
    const close = Buffer.concat(frames);
    expect(close[0]).toBe(0x88);
    expect(close.readUInt16BE(2)).toBe(1009);
    expect(controls.at(-1)).toMatchObject({ t: 'close', code: 1009 });
  });

  it('refuses an upgrade without a valid key', () => {
    const { stream, spec, controls } = rawStream();
    expect(acceptWebSocket(stream, { ...spec, headers: {} }, { onMessage: () => {}, onClose: () => {} }, { maxPayload: 1024 })).toBeNull();
    expect(controls[0]).toMatchObject({ t: 'open_failed', error: { code: 'BAD_REQUEST' } });
  });
});
