import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import { PAGES_ORIGIN, serveTestPages } from '../helpers/pages.js';
import { pidsMatching } from '../../harness/processes.js';
import { json, startSystem, waitFor, type TestSystem } from '../../harness/system.js';

const IDLE_SEC = 5;

/** Sessions that outlive their clients' connections: reconnecting, idling from the last close, release. */
describe('sessions that outlive a connection', () => {
  let sys: TestSystem;
  const browsers: Browser[] = [];
  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => {
    await Promise.all(browsers.map((b) => b.close().catch(() => {})));
    await sys?.close();
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });

  const create = async (body: object): Promise<SessionView> => {
    const res = await json<SessionView>(
      sys.fetch(`${sys.url}/sessions?wait=true`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    );
    expect(res.status).toBe(201);
    expect(res.body.status).toBe('running');
    return res.body;
  };
  const statusOf = async (id: string) => (await json<SessionView>(sys.fetch(`${sys.url}/sessions/${id}`))).body;
  const connect = async (cdpUrl: string) => {
    const browser = await chromium.connectOverCDP(cdpUrl, { timeout: 30_000 });
    browsers.push(browser);
    return browser;
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('a quiet connected client keeps its session past the idle timeout; a new connection with the same cdpUrl finds its page; the idle timeout counts from the disconnect', async () => {
    const s = await create({ idleTimeout: IDLE_SEC, timeout: 300 });
    const first = await connect(s.cdpUrl);
    await serveTestPages(first.contexts()[0]!);
    const page = await first.contexts()[0]!.newPage();
    await page.goto(`${PAGES_ORIGIN}/kept`);
    await page.evaluate('window.kept = "still here"');
    // Twice the idle timeout with the connection open and nothing on it.
    await sleep(IDLE_SEC * 2000 + 1500);
    expect((await statusOf(s.id)).status).toBe('running');
    await first.close(); // over CDP: disconnects, the browser goes on
    await sleep(1000);
    expect((await statusOf(s.id)).status).toBe('running');

    const second = await connect(s.cdpUrl);
    const found = second
      .contexts()[0]!
      .pages()
      .find((p) => p.url() === `${PAGES_ORIGIN}/kept`);
    expect(found, 'the page opened on the first connection').toBeDefined();
    expect(await found!.evaluate('window.kept')).toBe('still here');
    const disconnectedAt = Date.now();
    await second.close();
    await waitFor(async () => (await statusOf(s.id)).status !== 'running', (IDLE_SEC + 20) * 1000, 'the idle timeout after the last disconnect');
    const ended = await statusOf(s.id);
    expect(ended).toMatchObject({ status: 'timed_out', failureReason: 'idle timeout' });
    expect(ended.endedAt! - disconnectedAt).toBeGreaterThanOrEqual(IDLE_SEC * 1000 - 250);
  }, 90_000);

  it('release: with a client connected the session runs until it disconnects; with none it ends at once; an ended one is returned as it is', async () => {
    const [used, unused] = await Promise.all([create({ timeout: 300 }), create({ timeout: 300 })]);
    const browser = await connect(used.cdpUrl);
    const release = (id: string) => json<SessionView>(sys.fetch(`${sys.url}/sessions/${id}/release`, { method: 'POST' }));
    const held = await release(used.id);
    expect(held).toMatchObject({ status: 200, body: { id: used.id, status: 'running' } });
    await sleep(1000);
    expect((await statusOf(used.id)).status).toBe('running');
    await browser.close();
    await waitFor(async () => (await statusOf(used.id)).status === 'terminated', 10_000, 'released session ends when its client leaves');

    expect(await release(unused.id)).toMatchObject({ status: 200, body: { id: unused.id, status: 'terminated' } });
    expect(await release(unused.id)).toMatchObject({ status: 200, body: { status: 'terminated' } });
    expect(await release('00000000-0000-4000-8000-000000000000')).toMatchObject({ status: 404, body: { error: { code: 'SESSION_NOT_FOUND' } } });
  }, 60_000);

  it('keepAlive false: the session ends when its last client disconnects, not before the first one came', async () => {
    const s = await create({ keepAlive: false, timeout: 300, idleTimeout: 300 });
    expect(s).toMatchObject({ keepAlive: false });
    await sleep(1500);
    expect((await statusOf(s.id)).status).toBe('running');
    const [a, b] = [await connect(s.cdpUrl), await connect(s.cdpUrl)];
    await a.close();
    await sleep(1000);
    expect((await statusOf(s.id)).status).toBe('running');
    await b.close();
    await waitFor(async () => (await statusOf(s.id)).status === 'terminated', 10_000, 'the session ends with its last client');
    const bad = await json(sys.fetch(`${sys.url}/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ keepAlive: 'no' }) }));
    expect(bad).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION_FAILED' } } });
  }, 60_000);
});
