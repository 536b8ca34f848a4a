import { HTTPException } from 'hono/http-exception';
import { describe, expect, it } from 'vitest';
import { clientResponseHeaders, upgradeAnswerHeaders, upstreamRequestHeaders } from '../../router/data-plane/headers.js';
import { errorBody, errorHeaders, errorJson, redactPath, toAppError } from '../../router/http/errors.js';
import { AppError, ERROR_STATUS, fromWire, toWire, type ErrorCode } from '../../shared/errors.js';
import { acceptHello, admitAgent, bearerToken, MAX_HELLO_BYTES, parseAgentTokens } from '../../shared/tunnel/handshake.js';
import { PROTOCOL_VERSION, TunnelClose } from '../../shared/tunnel/protocol.js';
import { RemoteHub, TARGET_HEADERS } from '../../router/worker/remote-hub.js';

describe('errors: one table of code and status, mapped to HTTP in one place', () => {
  it.each(Object.entries(ERROR_STATUS) as Array<[ErrorCode, number]>)('%s → %i, and across the tunnel unchanged', (code, status) => {
    const e = new AppError(code, 'why', { details: { n: 1 } });
    expect(e.status).toBe(status);
    expect(errorBody(toAppError(e))).toEqual({ error: { code, message: 'why', details: { n: 1 } } });
    const back = fromWire(JSON.parse(JSON.stringify(toWire(e))));
    expect(back).toBeInstanceOf(AppError);
    expect([back.code, back.status, back.message, back.details]).toEqual([code, status, 'why', { n: 1 }]);
  });

  it.each([
    ['a Hono 413', new HTTPException(413), 'PAYLOAD_TOO_LARGE', 413],
    ['a Hono 400 (malformed JSON)', new HTTPException(400, { message: 'Malformed JSON in request body' }), 'INVALID_JSON', 400],
    ['a Hono 404', new HTTPException(404), 'NOT_FOUND', 404],
    ['another Hono status', new HTTPException(418, { message: 'teapot' }), 'BAD_REQUEST', 400],
    ['anything else', new TypeError('x is undefined'), 'INTERNAL', 500],
  ])('%s becomes %s', (_name, err, code, status) => {
    const e = toAppError(err);
    expect([e.code, e.status]).toEqual([code, status]);
    if (code === 'INTERNAL') expect(e.message).toBe('internal error'); // internals never reach the client
  });

  it.each([
    ['RATE_LIMITED', { retryAfterSec: 2.2, headers: { ratelimit: '"api";r=0;t=3' } }, { 'retry-after': '3', ratelimit: '"api";r=0;t=3' }],
    ['QUOTA_EXCEEDED', { retryAfterSec: 5 }, { 'retry-after': '5' }],
    ['CAPACITY_EXHAUSTED', { retryAfterSec: 0.1 }, { 'retry-after': '1' }],
    ['UNAUTHORIZED', {}, {}],
  ] as const)('%s carries its headers (every 429 a whole-second Retry-After)', async (code, opts, headers) => {
    const e = new AppError(code, 'no', opts);
    expect(errorHeaders(e)).toEqual(headers);
    const res = errorJson(e);
    expect(res.status).toBe(ERROR_STATUS[code]);
    for (const [k, v] of Object.entries(headers)) expect(res.headers.get(k)).toBe(v);
  });

  it('a session token in a path never reaches a log line', () => {
    expect(redactPath('/sessions/abc/proxy/~env-user.17.c2lnbmF0dXJl/json/version')).toBe('/sessions/abc/proxy/~…/json/version');
    expect(redactPath('/sessions/abc')).toBe('/sessions/abc');
  });

  it('a code from a newer peer becomes AGENT_ERROR with the original kept in details; a non-AppError crosses as INTERNAL', () => {
    expect(fromWire({ code: 'SOMETHING_NEW', message: 'm', status: 418 })).toMatchObject({ code: 'AGENT_ERROR', status: 502, details: { code: 'SOMETHING_NEW', status: 418 } });
    expect(toWire(new Error('/etc/secret: EACCES'))).toEqual({ code: 'INTERNAL', message: 'internal error', status: 500 });
  });
});

describe('agent handshake', () => {
  const url = (q: string) => new URL(`http://router/agent/connect${q}`);
  const token = 'agent-token-0123456789';

  it.each([
    ['no token', { authorization: null, upgrade: 'websocket', url: url('?cluster=a') }, 'UNAUTHORIZED', 401],
    ['a wrong token', { authorization: 'Bearer nope', upgrade: 'websocket', url: url('?cluster=a') }, 'UNAUTHORIZED', 401],
    ['a token that is a prefix', { authorization: `Bearer ${token.slice(0, -1)}`, upgrade: 'websocket', url: url('?cluster=a') }, 'UNAUTHORIZED', 401],
    ['no cluster', { authorization: `Bearer ${token}`, upgrade: 'websocket', url: url('') }, 'VALIDATION_FAILED', 400],
    ['a cluster that is no DNS label', { authorization: `Bearer ${token}`, upgrade: 'websocket', url: url('?cluster=Bad_Name') }, 'VALIDATION_FAILED', 400],
    ['no upgrade', { authorization: `Bearer ${token}`, upgrade: null, url: url('?cluster=a') }, 'UPGRADE_REQUIRED', 426],
  ])('refuses %s before any socket exists', async (_name, req, code, status) => {
    await expect(admitAgent(req, { anyCluster: token, byCluster: {} })).rejects.toMatchObject({ code, status });
  });

  it('a token bound to a cluster opens that cluster only; a cluster with its own token takes no other', async () => {
    const east = 'east-token-0123456789abcdef';
    const tokens = { anyCluster: token, byCluster: { east } };
    const req = (t: string, cluster: string) => ({ authorization: `Bearer ${t}`, upgrade: 'websocket', url: url(`?cluster=${cluster}`) });
    await expect(admitAgent(req(east, 'east'), tokens)).resolves.toEqual({ cluster: 'east' });
    await expect(admitAgent(req(east, 'west'), tokens)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expect(admitAgent(req(token, 'east'), tokens)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expect(admitAgent(req(token, 'west'), tokens)).resolves.toEqual({ cluster: 'west' });
    // Without a token for any cluster, only the bound clusters exist.
    await expect(admitAgent(req(token, 'west'), { byCluster: { east } })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expect(admitAgent(req(east, '__proto__'), { byCluster: { east } })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
  });

  it.each([
    ['east:short', /at least 16/],
    ['East:0123456789abcdef0', /DNS label/],
    ['nocolon', /entry 1/],
    ['a:0123456789abcdef0,a:0123456789abcdef1', /two tokens/],
  ])('AGENT_TOKENS %s is refused without echoing a token', (text, why) => {
    expect(() => parseAgentTokens(text)).toThrow(why);
    expect(() => parseAgentTokens(text)).not.toThrow(/0123456789abcdef/);
  });

  it('admits a good request and reads the bearer token strictly', async () => {
    await expect(admitAgent({ authorization: `bearer ${token}`, upgrade: 'WebSocket', url: url('?cluster=edge-1') }, { anyCluster: token, byCluster: {} })).resolves.toEqual({
      cluster: 'edge-1',
    });
    expect(bearerToken('Bearer a b')).toBeNull();
    expect(bearerToken('Basic abc')).toBeNull();
  });

  const hello = (over: Record<string, unknown> = {}) =>
    JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, clusterId: 'east', nodeName: 'n1', agentId: 'n1/abc', runtime: 'local', ...over });
  it.each([
    ['a binary message', new Uint8Array([1, 2]), TunnelClose.BAD_HELLO],
    ['an oversized message', hello({ nodeName: 'x'.repeat(MAX_HELLO_BYTES) }), TunnelClose.BAD_HELLO],
    ['no JSON', '{nope', TunnelClose.BAD_HELLO],
    ['another message', JSON.stringify({ t: 'ping', ts: 0 }), TunnelClose.BAD_HELLO],
    ['an unknown field', hello({ extra: true }), TunnelClose.BAD_HELLO],
    ['a bad cluster id', hello({ clusterId: '-x-' }), TunnelClose.BAD_HELLO],
    ['another protocol version', hello({ v: PROTOCOL_VERSION + 1 }), TunnelClose.UNSUPPORTED_VERSION],
    ['another cluster than the URL named', hello({ clusterId: 'west' }), TunnelClose.WRONG_CLUSTER],
  ])('closes a tunnel whose first message is %s', (_name, message, code) => {
    expect(acceptHello(message, 'east')).toMatchObject({ ok: false, code });
  });

  it('accepts a hello for its cluster', () => {
    expect(acceptHello(hello(), 'east')).toMatchObject({ ok: true, hello: { clusterId: 'east', agentId: 'n1/abc' } });
  });
});

describe('proxy headers', () => {
  it('drops hop-by-hop headers and every header Connection names, and Host', () => {
    const out = upstreamRequestHeaders(
      [
        ['Host', 'router:3000'],
        ['Connection', 'keep-alive, X-Secret-Hop'],
        ['X-Secret-Hop', '1'],
        ['Keep-Alive', 'timeout=5'],
        ['TE', 'trailers'],
        ['Accept', 'a'],
        ['Accept', 'b'],
      ],
      'http',
    );
    expect(out).toEqual({ accept: 'a, b' });
  });

  it.each(['http', 'ws', 'upgrade'] as const)('%s streams never carry the client credentials for the router', (kind) => {
    const out = upstreamRequestHeaders(
      [
        ['Authorization', 'Bearer bso_secret'],
        ['X-API-Key', 'bso_secret'],
        ['Cookie', 'site=1; bso_session_token=env-user.1.sig'],
        ['Cookie', 'other=2'],
      ],
      kind,
    );
    // A session host's token cookie is the router's too; the site's own cookies pass.
    expect(out).toEqual({ cookie: 'site=1; other=2' });
    expect(upstreamRequestHeaders([['Cookie', 'bso_session_token=x']], kind)).toEqual({});
  });

  it("WebSocket streams: messages mode drops the client's handshake; splice keeps it; both drop Origin", () => {
    const h: Array<[string, string]> = [
      ['connection', 'Upgrade'],
      ['upgrade', 'websocket'],
      ['sec-websocket-key', 'k'],
      ['sec-websocket-version', '13'],
      ['sec-websocket-protocol', 'p'],
      ['origin', 'https://evil.example'],
    ];
    expect(upstreamRequestHeaders(h, 'ws')).toEqual({ 'sec-websocket-protocol': 'p' });
    expect(upstreamRequestHeaders(h, 'upgrade')).toEqual({ 'sec-websocket-key': 'k', 'sec-websocket-version': '13', 'sec-websocket-protocol': 'p' });
  });

  it('responses lose hop-by-hop headers, Connection-named ones and the length the router re-frames', () => {
    expect(
      clientResponseHeaders([
        ['Content-Type', 'application/json'],
        ['Content-Length', '9'],
        ['Connection', 'close, X-Hop'],
        ['X-Hop', '1'],
        ['Transfer-Encoding', 'chunked'],
        ['Set-Cookie', 'a'],
        ['Set-Cookie', 'b'],
      ]),
    ).toEqual([
      ['content-type', 'application/json'],
      ['set-cookie', 'a'],
      ['set-cookie', 'b'],
    ]);
    expect(
      upgradeAnswerHeaders([
        ['Upgrade', 'websocket'],
        ['Sec-WebSocket-Accept', 'x'],
        ['Set-Cookie', 'no'],
      ]),
    ).toEqual([
      ['upgrade', 'websocket'],
      ['sec-websocket-accept', 'x'],
    ]);
  });
});

describe('the Worker → hub object boundary', () => {
  it("carries the target the Worker resolved, never a client's own copy of those headers", async () => {
    const seen: Request[] = [];
    const stub = { fetch: async (input: Request | string) => (seen.push(input as Request), new Response('ok')) };
    const ns = { idFromName: (n: string) => ({ toString: () => n }), get: () => stub };
    const hub = new RemoteHub({ HUB: ns, DIRECTORY: ns } as never);
    const session = { id: 'aaaaaaaa-0000-4000-8000-000000000001', cluster: 'c1' } as never;
    const forged = { [TARGET_HEADERS.connectToken]: 'forged', [TARGET_HEADERS.path]: '/json/evil', authorization: 'Bearer k' };
    await hub.forward({ session, path: '/json/version', wsBase: 'ws://r' }, new Request('http://r/sessions/x/proxy/json/version', { headers: forged }));
    const sent = seen[0]!.headers;
    expect([sent.get(TARGET_HEADERS.path), sent.get(TARGET_HEADERS.wsBase), sent.get(TARGET_HEADERS.connectToken)]).toEqual(['/json/version', 'ws://r', null]);
    await hub.forward({ session, path: '/', wsBase: 'ws://r', connectToken: 'real' }, new Request('http://r/x', { headers: forged }));
    expect(seen[1]!.headers.get(TARGET_HEADERS.connectToken)).toBe('real');
  });
});
