import { build, type Plugin } from 'esbuild';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Miniflare } from 'miniflare';

/** Files the Worker imports as text: the same files wrangler.toml's `[[rules]]` of type "Text" name. */
const TEXT_MODULES = /[\\/]swagger-ui-dist[\\/](swagger-ui-bundle\.js|swagger-ui\.css)$/;
const textModules: Plugin = {
  name: 'text-modules',
  setup(b) {
    b.onLoad({ filter: TEXT_MODULES }, async (args) => ({ contents: await readFile(args.path, 'utf8'), loader: 'text' }));
  },
};

/** Bundles router/worker.ts the way wrangler would (one ES module) for workerd. */
export async function bundleWorker(): Promise<{ file: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'bso-edge-'));
  const file = join(dir, 'worker.mjs');
  const cleanup = () => rm(dir, { recursive: true, force: true });
  await build({
    entryPoints: [new URL('../router/worker.ts', import.meta.url).pathname],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'],
    mainFields: ['browser', 'module', 'main'],
    outfile: file,
    logLevel: 'silent',
    plugins: [textModules],
  }).catch(async (err: unknown) => {
    await cleanup();
    throw err;
  });
  return { file, cleanup };
}

/** The Workers router in miniflare (real workerd) on a free loopback port. */
export async function startEdgeRouter(opts: { bindings: Record<string, string> }): Promise<{ url: string; close(): Promise<void> }> {
  const bundle = await bundleWorker();
  const { readFile } = await import('node:fs/promises');
  const mf = new Miniflare({
    modules: true,
    script: await readFile(bundle.file, 'utf8'),
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
}
