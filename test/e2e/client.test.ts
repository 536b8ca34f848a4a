import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BsoClient, BsoError } from '../../client/index.js';
import { startSystem, TEST_KEYS, type TestSystem } from '../../harness/system.js';

describe('the typed client against a running router', () => {
  let sys: TestSystem;
  let bso: BsoClient;
  beforeAll(async () => {
    sys = await startSystem({ routerEnv: { MAX_SESSIONS: '3' } });
    bso = new BsoClient({ url: sys.url, env: { BSO_API_KEY: TEST_KEYS.user } });
  }, 60_000);
  afterAll(async () => {
    await sys?.close();
  });

  it('every method: create (waiting or not), waitUntilRunning, get, status, a list page by page, delete, health; the key from BSO_API_KEY', async () => {
    const a = await bso.createSession({ timeout: 120 }, { wait: true });
    expect(a.status).toBe('running');
    const pending = await bso.createSession({ options: { userAgent: 'bso-client/1' } });
    expect(['pending', 'running']).toContain(pending.status);
    const seen: string[] = [];
    const b = await bso.waitUntilRunning(pending.id, { onStatus: (s) => seen.push(s.status) });
    expect([b.id, b.status, seen.at(-1)]).toEqual([pending.id, 'running', 'running']);
    expect(b.options).toEqual({ userAgent: 'bso-client/1' });
    expect((await bso.getSession(a.id)).cdpUrl).toBe(a.cdpUrl);
    const status = await bso.getStatus(a.id);
    expect([status.status, status.health.agentConnected]).toEqual(['running', true]);

    // A page of one at a time: the iterator follows nextCursor across pages, newest first.
    const listed: string[] = [];
    for await (const s of bso.listSessions({ status: 'running', pageSize: 1 })) listed.push(s.id);
    expect(listed).toEqual([b.id, a.id]);

    const health = await bso.health();
    expect([health.status, health.agents.length]).toEqual(['ok', 1]);

    const browser = await chromium.connectOverCDP(b.cdpUrl);
    const page = await browser.contexts()[0]!.newPage();
    expect(await page.evaluate(() => navigator.userAgent)).toBe('bso-client/1');
    await browser.close();

    // Released with no client connected: it ends at once.
    expect((await bso.releaseSession(a.id)).status).toBe('terminated');
    expect((await bso.deleteSession(b.id)).status).toBe('terminated');
    const gone = await bso.getSession('0'.repeat(32)).catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(BsoError);
    expect([(gone as BsoError).status, (gone as BsoError).code]).toEqual([404, 'SESSION_NOT_FOUND']);
    const invalid = await bso.createSession({ timeout: 1 }).catch((e: unknown) => e);
    expect([(invalid as BsoError).status, (invalid as BsoError).code, (invalid as BsoError).message]).toEqual([
      400,
      'VALIDATION_FAILED',
      expect.stringMatching(/^invalid body: timeout: /),
    ]);
    const refused = await new BsoClient({ url: sys.url, env: {} }).getSession(a.id).catch((e: unknown) => e);
    expect([(refused as BsoError).status, (refused as BsoError).code]).toEqual([401, 'UNAUTHORIZED']);
  });

  it('withSession deletes the session when the function throws', async () => {
    let id = '';
    const thrown = await bso
      .withSession({}, async (s) => {
        id = s.id;
        expect(s.status).toBe('running');
        throw new Error('the caller failed');
      })
      .catch((e: unknown) => e);
    expect((thrown as Error).message).toBe('the caller failed');
    expect((await bso.getSession(id)).status).toBe('terminated');
    expect(await bso.withSession({}, async (s) => s.status)).toBe('running');
  });

  it("a 429 is retried after the router's Retry-After, and only as often as allowed", async () => {
    const held = await Promise.all([1, 2, 3].map(() => bso.createSession({}, { wait: true })));
    const impatient = await new BsoClient({ url: sys.url, apiKey: TEST_KEYS.user, maxRetries: 0 }).createSession().catch((e: unknown) => e);
    expect(impatient).toBeInstanceOf(BsoError);
    const refusal = impatient as BsoError;
    expect([refusal.status, refusal.code]).toEqual([429, 'CAPACITY_EXHAUSTED']);
    expect(refusal.retryAfterSec).toBeGreaterThanOrEqual(1);
    // A slot frees while the patient client waits out the Retry-After; its retry gets it.
    const started = Date.now();
    const patient = bso.createSession({}, { wait: true });
    setTimeout(() => void bso.deleteSession(held[0]!.id), 300);
    const got = await patient;
    expect(got.status).toBe('running');
    expect(Date.now() - started).toBeGreaterThanOrEqual(refusal.retryAfterSec! * 1000);
    for (const s of [...held.slice(1), got]) await bso.deleteSession(s.id);
  });

  it('queueSec: the create waits in the queue and gets the first slot that frees; at the deadline its 429 is not retried', async () => {
    const held = await Promise.all([1, 2, 3].map(() => bso.createSession({}, { wait: true })));
    // No 429 retries: the queue alone gets this client its session.
    const queued = new BsoClient({ url: sys.url, apiKey: TEST_KEYS.user, maxRetries: 0 }).createSession({}, { queueSec: 30 });
    setTimeout(() => void bso.deleteSession(held[0]!.id), 500);
    const got = await queued;
    expect(got.status).toBe('running');
    const late = Date.now();
    const refused = await bso.createSession({}, { queueSec: 1 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(BsoError);
    expect([(refused as BsoError).status, (refused as BsoError).code, ((refused as BsoError).details as { queued?: boolean }).queued]).toEqual([429, 'CAPACITY_EXHAUSTED', true]);
    // Not retried: a retry would come only after the 5 s Retry-After.
    expect(Date.now() - late).toBeLessThan(5000);
    for (const s of [...held.slice(1), got]) await bso.deleteSession(s.id);
  });

  it('every call takes an AbortSignal: an abort ends a call mid-wait, at once, with its reason', async () => {
    const aborted = AbortSignal.abort(new Error('stop listing'));
    await expect(bso.listSessions({ signal: aborted }).next()).rejects.toThrow('stop listing');
    // The cluster full: the create waits out a 5 s Retry-After before its retry; the abort cuts that short.
    const held = await Promise.all([1, 2, 3].map(() => bso.createSession({}, { wait: true })));
    const controller = new AbortController();
    const started = Date.now();
    const creating = bso.createSession({}, { wait: true, signal: controller.signal }).catch((e: unknown) => e);
    setTimeout(() => controller.abort(new Error('given up')), 300);
    expect(((await creating) as Error).message).toBe('given up');
    expect(Date.now() - started).toBeLessThan(3000);
    expect((await sys.fetch(`${sys.url}/sessions?status=running`).then((r) => r.json())).items).toHaveLength(3);
    for (const s of held) await bso.deleteSession(s.id);
  });
});
