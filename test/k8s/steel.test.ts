import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { startAgent, type RunningAgent } from '../../agent/main.js';
import type { SessionView } from '../../shared/api.js';
import { kubeAgentEnv, NAMESPACE, startTestCluster, STEEL_IMAGES, steelPeer, steelRecipes, until, type TestCluster } from '../../harness/cluster.js';
import { pidsMatching } from '../../harness/processes.js';
import { withViewer } from '../helpers/viewer.js';
import { json, startSystem, TEST_TOKEN, type TestSystem } from '../../harness/system.js';
import { openTestPage } from '../helpers/pages.js';

const found = steelPeer();
if ('absent' in found) console.log(`steel profile suite not run: ${found.absent}`);

/** The specification's `.env`, as a new user would set it. */
const SPEC_ENV = {
  BROWSER_API_IMAGE: STEEL_IMAGES.api,
  BROWSER_API_PORT: '3000',
  BROWSER_UI_IMAGE: STEEL_IMAGES.ui,
  BROWSER_UI_PORT: '5173',
};
/** steel's API process; and what every process of a steel container carries on its command line (its
 * folder: the container's init, start.sh, steel, and steel's Chromium, whose profile is there). */
const STEEL_API = 'api/build/index.js';
const STEEL_CONTAINER = 'bso-steel-';
const chromiumFolders = () => readdirSync(tmpdir()).filter((f) => f.startsWith('org.chromium.Chromium.'));
const chromiumFoldersBefore = new Set(chromiumFolders());

describe.skipIf('absent' in found)('steel image profile on a real control plane, with the real steel API', () => {
  let cluster: TestCluster;
  let sys: TestSystem;
  const agents: RunningAgent[] = [];
  const starting = new AbortController();

  const agentEnv = (clusterId: string, extra: Record<string, string> = {}) =>
    // steel starts its API, then relaunches its browser for the session: seconds each on a loaded machine.
    kubeAgentEnv(cluster, sys.url, TEST_TOKEN, clusterId, { ...SPEC_ENV, START_TIMEOUT_MS: '90000', ...extra });
  const addAgent = async (clusterId: string, extra: Record<string, string> = {}) => {
    agents.push(await startAgent(loadAgentConfig(agentEnv(clusterId, extra), false)));
    await until(`agent ${clusterId}`, async () => (await json(sys.fetch(`${sys.url}/health`))).body.agents.some((x: { cluster: string }) => x.cluster === clusterId), 10_000);
  };
  const create = (body: object) =>
    json<SessionView>(sys.fetch(`${sys.url}/sessions?wait=true&waitTimeout=100`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }));
  const get = async (id: string) => (await json<SessionView>(sys.fetch(`${sys.url}/sessions/${id}`))).body;
  const jobOf = (id: string) => cluster.admin.call('GET', `/apis/batch/v1/namespaces/${NAMESPACE}/jobs/bso-${id}`).catch(() => null);
  const nothingLeft = async (id: string) => {
    await until(
      `job and pod of ${id} gone`,
      async () => {
        const pods = (await cluster.admin.call('GET', `/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=bso.dev%2Fsession-id%3D${id}`)).items;
        return (await jobOf(id)) === null && pods.length === 0;
      },
      30_000,
    );
    await until('no steel process left', async () => (await pidsMatching(STEEL_CONTAINER)).length === 0, 15_000);
  };

  beforeAll(async () => {
    if ('absent' in found) return;
    cluster = await startTestCluster({ signal: starting.signal, images: steelRecipes(found.peer) });
    // Each session on its own host too, serving the API container (steel serves its own UI): Chromium
    // resolves *.localhost to loopback.
    sys = await startSystem({ agents: 0, routerEnv: { START_TIMEOUT_MS: '120000', SESSION_HOST_SUFFIX: 'localhost', SESSION_HOST_TARGET: 'api' } });
    await addAgent('steel');
  }, 180_000);

  afterAll(async () => {
    starting.abort();
    await Promise.all(agents.map((a) => a.close()));
    await sys?.close();
    await cluster?.stop();
    expect(await pidsMatching(STEEL_CONTAINER)).toEqual([]);
    expect(readdirSync(tmpdir()).filter((f) => f.startsWith(STEEL_CONTAINER))).toEqual([]);
    // Chromium's singleton folders stay in each container's own /tmp (as the pod's emptyDir keeps them).
    expect(chromiumFolders().filter((f) => !chromiumFoldersBefore.has(f))).toEqual([]);
  }, 120_000);

  it("the specification's .env and example body: 201, running once steel is ready, options seen by Playwright and Puppeteer, steel's URLs through the router, DELETE releases it and leaves nothing", async () => {
    const options = { userAgent: 'bso-steel-test/1.0', viewport: { width: 900, height: 700 }, customOption: 'value' };
    const res = await create({ timeout: 3600, options });
    expect(res.status).toBe(201);
    const s = res.body;
    expect(s.status, s.failureReason).toBe('running');
    expect(s.options).toEqual(options);

    // The Job speaks steel: health probe on its port, URLs through the router, the UI told where the API is.
    const job = await jobOf(s.id);
    const [browserContainer, uiContainer] = job.spec.template.spec.containers;
    expect(browserContainer.readinessProbe.httpGet).toMatchObject({ path: '/v1/health', port: 3000 });
    // The router serves the session's steel on its own host too (SESSION_HOST_TARGET=api): steel's URLs point there.
    const domain = new URL(s.uiUrl!).host;
    expect(domain).toBe(`${s.id}.localhost:${new URL(sys.url).port}`);
    expect(browserContainer.env).toEqual(
      expect.arrayContaining([
        { name: 'DOMAIN', value: domain },
        { name: 'CDP_DOMAIN', value: domain },
      ]),
    );
    expect(uiContainer.env).toContainEqual({ name: 'API_URL', value: 'http://127.0.0.1:3000' });

    // steel holds the session with the options mapped to its own fields, the rest in `extra`.
    const steelSession = await json(fetch(`${s.proxyUrl}/v1/sessions/${s.id}`));
    expect(steelSession.status).toBe(200);
    expect(steelSession.body).toMatchObject({ id: s.id, status: 'live', userAgent: options.userAgent, dimensions: options.viewport });

    // Playwright and Puppeteer through the router's cdpUrl (steel proxies CDP itself).
    const { browser, page } = await openTestPage(s.cdpUrl);
    expect(await page.evaluate(() => navigator.userAgent)).toBe(options.userAgent);
    expect(await page.textContent('#greeting')).toBe('Hello from the test');
    await browser.close();
    const pup = await puppeteer.connect({ browserWSEndpoint: s.cdpUrl, defaultViewport: null });
    const pupPage = (await pup.pages())[0] ?? (await pup.newPage());
    expect(await pupPage.evaluate(() => navigator.userAgent)).toBe(options.userAgent);
    expect(await pupPage.evaluate(() => window.innerWidth)).toBe(options.viewport.width);
    await pup.disconnect();

    // steel's own URLs come back pointing through the router, and answer there.
    const view = await get(s.id);
    const proxied = `${sys.url}/sessions/${s.id}/proxy`;
    expect(view.debugUrl?.startsWith(proxied)).toBe(true);
    expect(view.sessionViewerUrl?.startsWith(proxied)).toBe(true);
    expect(view.websocketUrl?.startsWith(proxied.replace(/^http/, 'ws'))).toBe(true);
    const debug = await fetch(view.debugUrl!);
    expect(debug.status).toBe(200);
    expect(await debug.text()).toContain(`ws://${domain}/v1/sessions/cast`);
    // steel's root answers a client that is not a browser with where its UI is.
    const viewerAnswer = await json(fetch(view.sessionViewerUrl!));
    expect(viewerAnswer).toMatchObject({ status: 200, body: { ui: '/ui' } });
    const direct = await chromium.connectOverCDP(view.websocketUrl!);
    expect(direct.contexts().length).toBeGreaterThan(0);
    await direct.close();

    // The DevTools HTTP endpoints steel lacks, made by the agent from CDP.
    const version = await json(fetch(`${s.proxyUrl}/json/version`));
    expect(version.status).toBe(200);
    expect(version.body.Browser).toMatch(/Chrom/);
    expect(version.body.webSocketDebuggerUrl).toMatch(new RegExp(`^ws://.*/sessions/${s.id}/proxy/.*devtools/browser$`));
    const list = await json(fetch(`${s.proxyUrl}/json/list`));
    expect(list.status).toBe(200);
    expect(list.body.some((t: { type: string }) => t.type === 'page')).toBe(true);
    const protocol = await json(fetch(`${s.proxyUrl}/json/protocol`));
    expect(protocol.body.domains.some((d: { domain: string }) => d.domain === 'Runtime')).toBe(true);

    // The agent's health pass asks steel's CDP (it has no /json/version of its own).
    await until('a health report that steel answers CDP', async () => (await json(sys.fetch(`${sys.url}/sessions/${s.id}/status`))).body.health.browserReachable === true, 20_000);

    const del = await json<SessionView>(sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' }));
    expect(del.body.status).toBe('terminated');
    await nothingLeft(s.id);
  });

  it("steel's own UI on the session's own host renders in a real browser: its assets and API at absolute paths, the token kept in the host's cookie", async () => {
    const s = (await create({ timeout: 600 })).body;
    expect(s.status, s.failureReason).toBe('running');
    expect(new URL(s.uiUrl!).host).toBe(`${s.id}.localhost:${new URL(sys.url).port}`);
    try {
      await withViewer(async (browser) => {
        const page = await browser.contexts()[0]!.newPage();
        const failed: string[] = [];
        const isAsset = (type: string) => ['document', 'script', 'stylesheet', 'image', 'font'].includes(type);
        page.on('requestfailed', (r) => isAsset(r.resourceType()) && failed.push(`${r.url()}: ${r.failure()?.errorText}`));
        page.on('response', (r) => isAsset(r.request().resourceType()) && r.status() >= 400 && failed.push(`${r.status()} ${r.url()}`));
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
        // steel sends a browser at its root to its UI, at /ui.
        await page.goto(s.uiUrl!);
        await page.waitForURL(/\/ui\/?$/, { timeout: 15_000 });
        await page
          .waitForFunction(() => (document.getElementById('root')?.childElementCount ?? 0) > 0 && document.body.innerText.trim().length > 0, null, { timeout: 30_000 })
          .catch(async (err: Error) => {
            throw new Error(`${err.message}; page ${page.url()}: ${(await page.content()).slice(0, 500)}; errors: ${errors.join(' | ')}; failed: ${failed.join(' | ')}`);
          });
        await page.waitForLoadState('networkidle', { timeout: 15_000 }).catch(() => {});
        const png = await page.screenshot();
        expect(png.byteLength).toBeGreaterThan(5000);
        expect(failed).toEqual([]);
        expect(await page.evaluate(() => [...document.scripts].some((sc) => sc.src.includes('/ui/assets/')))).toBe(true);
        // The token rode in once; everything after came with the host's cookie.
        const cookies = await browser.contexts()[0]!.cookies(s.uiUrl!);
        expect(cookies.map((c) => [c.name, c.httpOnly, c.sameSite])).toEqual([['bso_session_token', true, 'Lax']]);
      });
    } finally {
      await sys.fetch(`${sys.url}/sessions/${s.id}`, { method: 'DELETE' });
    }
    await nothingLeft(s.id);
  });

  it('steel killed inside a running session: the session fails with a reason, and no Job is left', async () => {
    const s = (await create({ timeout: 600 })).body;
    expect(s.status, s.failureReason).toBe('running');
    const pids = await pidsMatching(STEEL_API);
    expect(pids.length).toBe(1);
    process.kill(pids[0]!, 'SIGKILL');
    const failed = await until(
      'the session failed',
      async () => {
        const v = await get(s.id);
        return v.status === 'failed' ? v : null;
      },
      30_000,
    );
    expect(failed.failureReason).toMatch(/container browser terminated with exit code/);
    await nothingLeft(s.id);
  });

  it('steel whose browser never starts: failed after the start deadline, no Job left', async () => {
    await addAgent('steel-broken', { BROWSER_API_IMAGE: STEEL_IMAGES.neverReady, BROWSER_PROFILE: 'steel', START_TIMEOUT_MS: '15000' });
    const started = Date.now();
    const res = await create({ cluster: 'steel-broken' });
    const s = res.body.status === 'failed' ? res.body : await until('failed', async () => ((await get(res.body.id)).status === 'failed' ? get(res.body.id) : null), 60_000);
    expect(s.failureReason).toMatch(/did not answer CDP in time/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(14_000);
    await nothingLeft(s.id);
  });
});
