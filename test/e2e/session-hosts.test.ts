import { request } from 'node:http';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import { pidsMatching } from '../../harness/processes.js';
import { json, startSystem, type TestSystem } from '../../harness/system.js';
import { SESSION_COOKIE } from '../../router/session-hosts.js';

type Answer = { status: number; headers: Record<string, string | string[] | undefined>; body: string };

/** One HTTP request to the router's own address with the `Host` a client of `<id>.localhost` sends (fetch cannot set Host). */
function hostRequest(routerUrl: string, host: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
  const u = new URL(routerUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, headers: { ...headers, host }, timeout: 15_000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', reject);
    req.end();
  });
}

describe('a session host without keys', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ auth: 'none', routerEnv: { SESSION_HOST_SUFFIX: 'localhost', SESSION_HOST_TARGET: 'api' } });
  });
  afterAll(async () => {
    await sys?.close();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  it('needs no token, and keeps none in a cookie whatever `?token=` says', async () => {
    const s = (await json<SessionView>(sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }))).body;
    expect(new URL(s.uiUrl!).search).toBe('');
    const host = `${s.id}.localhost:${new URL(sys.url).port}`;
    const res = await hostRequest(sys.url, host, '/json/version?token=a%3Bb%20c');
    expect(res.status).toBe(200);
    expect(res.headers['set-cookie']).toBeUndefined();
  });
});

for (const runtime of ['node', 'edge'] as const)
  describe(`each session on a host of its own (${runtime} router)`, () => {
    let sys: TestSystem;
    let s: SessionView;
    let other: SessionView;
    let host: string;

    beforeAll(async () => {
      // The local runtime has no UI container: the session host serves the browser API (its DevTools endpoints).
      sys = await startSystem({ runtime, routerEnv: { SESSION_HOST_SUFFIX: 'localhost', SESSION_HOST_TARGET: 'api' } });
      const create = async () =>
        (await json<SessionView>(sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }))).body;
      [s, other] = [await create(), await create()];
      host = `${s.id}.localhost:${new URL(sys.url).port}`;
    });
    afterAll(async () => {
      await sys?.close();
      expect(await pidsMatching('bso-chromium-')).toEqual([]);
    });

    it('the session view names its uiUrl: its own host, with its token', () => {
      expect(s.status).toBe('running');
      const ui = new URL(s.uiUrl!);
      expect(ui.host).toBe(host);
      expect(ui.pathname).toBe('/');
      expect(ui.searchParams.get('token')).toMatch(/^env-user\.\d+\.[\w-]{43}$/);
    });

    it('opened with ?token=, the host keeps the token in its cookie; its absolute paths then work with the cookie alone', async () => {
      const token = new URL(s.uiUrl!).searchParams.get('token')!;
      const first = await hostRequest(sys.url, host, `/json/version?token=${token}`);
      expect(first.status).toBe(200);
      const cookie = String(first.headers['set-cookie']);
      expect(cookie).toBe(`${SESSION_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Lax`);
      // An absolute path, as a single-page app's assets and API calls are.
      const next = await hostRequest(sys.url, host, '/json/list', { cookie: cookie.split(';')[0]! });
      expect(next.status).toBe(200);
      expect(JSON.parse(next.body).some((t: { type: string }) => t.type === 'page')).toBe(true);
      expect(next.headers['set-cookie']).toBeUndefined();
    });

    it('no token, a bad one, or another session’s: refused; a name that is no session host is the router itself', async () => {
      expect((await hostRequest(sys.url, host, '/json/version')).status).toBe(401);
      expect((await hostRequest(sys.url, host, '/json/version', { cookie: `${SESSION_COOKIE}=env-user.1.${'A'.repeat(43)}` })).status).toBe(401);
      const othersToken = new URL(other.uiUrl!).searchParams.get('token')!;
      expect((await hostRequest(sys.url, host, '/json/version', { cookie: `${SESSION_COOKIE}=${othersToken}` })).status).toBe(401);
      // Not one label before the suffix: the router's own routes answer.
      expect((await hostRequest(sys.url, `www.router.localhost:${new URL(sys.url).port}`, '/livez')).status).toBe(200);
    });

    it("a session host's own pages may open WebSockets there; another origin may not", async () => {
      const token = new URL(s.uiUrl!).searchParams.get('token')!;
      const version = JSON.parse((await hostRequest(sys.url, host, `/json/version?token=${token}`)).body);
      const path = new URL(version.webSocketDebuggerUrl).pathname.replace(/^.*\/devtools\//, '/devtools/');
      const open = (origin: string) =>
        new Promise<number>((resolve) => {
          const ws = new WebSocket(`${sys.url.replace(/^http/, 'ws')}${path}`, { headers: { host, origin, cookie: `${SESSION_COOKIE}=${token}` } });
          ws.once('open', () => {
            ws.close();
            resolve(101);
          });
          ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
          ws.once('error', () => resolve(-1));
        });
      expect(await open(`http://${host}`)).toBe(101);
      expect(await open('http://evil.example')).toBe(403);
    });
  });
