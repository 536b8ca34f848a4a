import { readdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import type { SessionView } from '../../shared/api.js';
import { CHROMIUM, pidsMatching, requireBinary } from '../../harness/processes.js';
import { spawnEntry, type Spawned } from '../../harness/spawn.js';
import { bundleWorker } from '../../harness/edge.js';
import { bearer, json } from '../../harness/system.js';

/** Folders a run may leave in the temporary directory if it does not clean up. */
const runFolders = async () => new Set((await readdir(tmpdir())).filter((name) => /^(bso-|miniflare-)/.test(name)));

describe('`npm run dev:edge`', () => {
  let dev: Spawned | undefined;
  afterAll(async () => {
    await dev?.stop();
  });

  it('starts the Worker with a local agent, so a session runs at once; SIGTERM stops everything and removes its folders', async () => {
    requireBinary(CHROMIUM, 'install the Debian package chromium');
    const before = await runFolders();
    dev = spawnEntry('scripts/dev-edge.ts', { CHROMIUM_PATH: CHROMIUM, LOG_LEVEL: 'info', METRICS_PORT: '0' });
    const listening = JSON.parse(await dev.waitForLine(/edge router listening/, 60_000)) as { url: string; apiKey: string };
    await dev.waitForLine(/tunnel connected/, 30_000);
    const auth = { ...bearer(listening.apiKey), 'content-type': 'application/json' };
    const created = await json<SessionView>(fetch(`${listening.url}/sessions?wait=true`, { method: 'POST', headers: auth, body: '{}' }));
    expect([created.status, created.body.status], JSON.stringify(created.body)).toEqual([201, 'running']);
    const browser = await chromium.connectOverCDP(created.body.cdpUrl);
    const page = await (browser.contexts()[0] ?? (await browser.newContext())).newPage();
    expect(await page.evaluate(() => 6 * 7)).toBe(42);
    await browser.close();
    expect((await json(fetch(`${listening.url}/sessions/${created.body.id}`, { method: 'DELETE', headers: auth }))).body.status).toBe('terminated');

    const made = [...(await runFolders())].filter((name) => !before.has(name));
    expect(made.some((name) => name.startsWith('bso-redis-'))).toBe(true);
    const exited = new Promise<number | null>((resolve) => dev!.proc.once('exit', (code) => resolve(code)));
    process.kill(dev.proc.pid!, 'SIGTERM');
    expect(await exited).toBe(0);
    const left = [...(await runFolders())].filter((name) => !before.has(name));
    expect(left).toEqual([]);
    for (const name of made) expect(await pidsMatching(join(tmpdir(), name)), `a process of ${name}`).toEqual([]);
    expect(await pidsMatching('bso-chromium-')).toEqual([]);
  });
});

describe('wrangler (the pinned 4.86.0) validates wrangler.toml and bundles the Worker', () => {
  it('`wrangler deploy --dry-run` bundles router/worker.ts, with Swagger UI as text modules beside it, and leaves nothing behind', async () => {
    const bundle = await bundleWorker();
    try {
      const files = await readdir(bundle.dir);
      const text = files.filter((f) => /-swagger-ui(-bundle\.js|\.css)$/.test(f));
      expect(text).toHaveLength(2);
      const main = await readFile(bundle.main, 'utf8');
      for (const f of text) expect(main).toContain(`./${f}`);
      // The Durable Object classes wrangler.toml binds are exported, as the runtime needs them.
      const exported = /export \{([^}]*)\}/.exec(main)?.[1] ?? '';
      expect(exported).toMatch(/\bTunnelHubObject\b/);
      expect(exported).toMatch(/\bDirectoryObject\b/);
      // Under the 10 MiB a Worker may be (before compression).
      expect((await stat(bundle.main)).size).toBeLessThan(10 * 1024 * 1024);
    } finally {
      await bundle.cleanup();
    }
    expect((await readdir(new URL('../../', import.meta.url).pathname)).filter((f) => f === '.wrangler')).toEqual([]);
  });
});
