import { build } from 'esbuild';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Miniflare } from 'miniflare';

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
