import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Miniflare } from 'miniflare';

const ROOT = new URL('..', import.meta.url).pathname;
const WRANGLER = join(ROOT, 'node_modules/.bin/wrangler');
const WRANGLER_TIMEOUT_MS = 120_000;

/**
 * The Worker exactly as `wrangler deploy` would upload it: wrangler (the pinned dev dependency) bundles
 * router/worker.ts with wrangler.toml's rules (`--dry-run --outdir`). Wrangler runs on a copy of
 * wrangler.toml in a folder of its own, with its user config there too, so neither the repo nor the
 * home folder keeps anything of it.
 */
export async function bundleWorker(): Promise<{ dir: string; main: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'bso-edge-'));
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    const config = (await readFile(join(ROOT, 'wrangler.toml'), 'utf8')).replace(/^main = "([^"]+)"$/m, (_, main: string) => `main = "${join(ROOT, main)}"`);
    await writeFile(join(dir, 'wrangler.toml'), config);
    const out = join(dir, 'out');
    await promisify(execFile)(WRANGLER, ['deploy', '--dry-run', '--outdir', out], {
      cwd: dir,
      timeout: WRANGLER_TIMEOUT_MS,
      killSignal: 'SIGKILL',
      env: { PATH: process.env.PATH ?? '', HOME: dir, XDG_CONFIG_HOME: dir, WRANGLER_LOG_PATH: join(dir, 'logs'), WRANGLER_SEND_METRICS: 'false', CI: 'true', NO_COLOR: '1' },
      maxBuffer: 1 << 22,
    });
    return { dir: out, main: join(out, 'worker.js'), cleanup };
  } catch (err) {
    await cleanup();
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`wrangler could not bundle the Worker: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

/** The Workers router in miniflare (real workerd) on a free loopback port, running wrangler's bundle. */
export async function startEdgeRouter(opts: { bindings: Record<string, string> }): Promise<{ url: string; close(): Promise<void> }> {
  const bundle = await bundleWorker();
  try {
    const mf = new Miniflare({
      modules: true,
      scriptPath: bundle.main,
      modulesRoot: bundle.dir,
      // The text modules wrangler wrote beside the bundle (wrangler.toml's [[rules]] of type "Text").
      modulesRules: [{ type: 'Text', include: ['**/*-swagger-ui-bundle.js', '**/*-swagger-ui.css'] }],
      compatibilityDate: '2026-04-01',
      durableObjects: { HUB: 'TunnelHubObject', DIRECTORY: 'DirectoryObject' },
      bindings: opts.bindings,
      host: '127.0.0.1',
      port: 0,
    });
    const url = (await mf.ready).href.replace(/\/$/, '');
    return {
      url,
      close: async () => {
        await mf.dispose();
        await bundle.cleanup();
      },
    };
  } catch (err) {
    await bundle.cleanup();
    throw err;
  }
}
