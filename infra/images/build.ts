/**
 * `npm run images`: the router, agent, browser and browser UI images, built without Docker or a
 * registry. Each is a Debian root filesystem made by mmdebstrap from the Debian mirror (the packages
 * the Dockerfile's stage installs, and Node.js where the Dockerfile's `node:20-bookworm-slim` has it:
 * this machine's own `node`, at /usr/local/bin), plus the same `npm run build` output and production
 * `node_modules` the Dockerfile copies, with the Dockerfile's user, command, ports and environment.
 * The result is one OCI image layout holding all four, tagged `bso/<name>:<version>`:
 *   tar -C <layout> -cf - . | ctr -n k8s.io images import -        # into a node's containerd
 *   skopeo copy oci:<layout>:bso/router:<version> docker://…        # into a registry
 * Root filesystems are cached by what goes into them (suite, packages, Node.js); the app layer is
 * rebuilt each time. Prints a JSON summary on its last line.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { sha256File, writeOciLayout } from './oci-layout.js';
import { IMAGE_RECIPES, imageConfig, type ImageRecipe, type RootfsRecipe, ROOTFS_RECIPES } from './recipes.js';

const repo = resolve(import.meta.dirname, '../..');
const log = (msg: string) => process.stderr.write(`images: ${msg}\n`);
const run = (cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) =>
  execFileSync(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'inherit', 'inherit'], maxBuffer: 1 << 26 });

export type BuiltImages = {
  layout: string;
  version: string;
  images: Array<{ name: string; ref: string; manifest: string; bytes: number }>;
  /** The cached root filesystems' layer tars, by name. */
  rootfs: Record<string, string>;
  seconds: { rootfs: Record<string, number>; app: number; total: number };
};

function sourceDateEpoch(): number {
  try {
    return (
      Number(
        execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: repo, stdio: ['ignore', 'pipe', 'ignore'] })
          .toString()
          .trim(),
      ) || 0
    );
  } catch {
    return 0;
  }
}

function gitRevision(): string {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repo, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return 'unknown';
  }
}

/**
 * One Debian root filesystem as an uncompressed layer tar, cached by what goes into it. mmdebstrap
 * runs apt inside the new root (as root: chroot; otherwise in a user namespace of its own).
 */
async function rootfsLayer(cache: string, recipe: RootfsRecipe, nodeBinary: string, mirror: string, epoch: number): Promise<{ path: string; seconds: number }> {
  const options = [
    '--quiet',
    '--variant=minbase',
    // As the Dockerfile's `apt-get install --no-install-recommends`.
    '--aptopt=APT::Install-Recommends "false"',
    `--include=${recipe.packages.join(',')}`,
    // What a container never reads: documentation, manuals, translations.
    '--dpkgopt=path-exclude=/usr/share/doc/*',
    '--dpkgopt=path-include=/usr/share/doc/*/copyright',
    '--dpkgopt=path-exclude=/usr/share/man/*',
    '--dpkgopt=path-exclude=/usr/share/info/*',
    '--dpkgopt=path-exclude=/usr/share/locale/*',
    '--customize-hook=mkdir -p "$1/usr/local/bin"',
    `--customize-hook=copy-in ${nodeBinary} /usr/local/bin`,
    '--customize-hook=chroot "$1" node --version',
    // apt's lists and caches: what `rm -rf /var/lib/apt/lists/*` drops in the Dockerfile.
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/ldconfig/aux-cache "$1"/var/log/apt "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log',
    '--format=tar',
  ];
  const nodeDigest = await sha256File(nodeBinary);
  const key = createHash('sha256').update(JSON.stringify({ recipe, options, mirror, nodeDigest })).digest('hex').slice(0, 16);
  const path = join(cache, 'layers', `${recipe.name}-${key}.tar`);
  if (existsSync(path)) return { path, seconds: 0 };
  mkdirSync(join(cache, 'layers'), { recursive: true });
  const started = Date.now();
  const partial = `${path}.partial`;
  rmSync(partial, { force: true });
  run('mmdebstrap', [...options, recipe.suite, partial, mirror], { env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) } });
  renameSync(partial, path);
  // Earlier recipes' root filesystems of this name are not used again.
  for (const old of readdirSync(join(cache, 'layers')))
    if (old.startsWith(`${recipe.name}-`) && join(cache, 'layers', old) !== path) rmSync(join(cache, 'layers', old), { force: true });
  return { path, seconds: (Date.now() - started) / 1000 };
}

/** `npm run build` and the production dependencies, as /app: what the Dockerfile's build stage hands on. */
function appLayer(work: string, epoch: number): string {
  run('npm', ['run', 'build', '--silent'], { cwd: repo });
  const stage = join(work, 'app-stage');
  const app = join(stage, 'app');
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(app, { recursive: true });
  for (const f of ['package.json', 'package-lock.json']) writeFileSync(join(app, f), readFileSync(join(repo, f)));
  run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], {
    cwd: app,
    env: { ...process.env, NODE_ENV: 'production' },
  });
  run('cp', ['-a', join(repo, 'dist'), join(app, 'dist')]);
  rmSync(join(app, 'package-lock.json'));
  const tar = join(work, 'app.tar');
  // Owned by root and not writable by the images' users, as Docker's COPY leaves them.
  run('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', `--mtime=@${epoch}`, '--mode=go-w', '-C', stage, '-cf', tar, 'app']);
  return tar;
}

export async function buildImages(opts: { cache?: string; mirror?: string } = {}): Promise<BuiltImages> {
  const started = Date.now();
  const version = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
  const nodeBinary = process.execPath;
  const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
  if (major < 20 || (major === 20 && minor < 19)) throw new Error(`the images carry this machine's Node.js, which must be ≥ 20.19 (it is ${process.version})`);
  const cache = opts.cache ?? imageCache();
  const mirror = opts.mirror ?? 'http://deb.debian.org/debian';
  const epoch = sourceDateEpoch();
  const created = new Date(epoch * 1000).toISOString();

  const rootfsSeconds: Record<string, number> = {};
  const rootfs = new Map<string, string>();
  for (const recipe of ROOTFS_RECIPES) {
    const layer = await rootfsLayer(cache, recipe, nodeBinary, mirror, epoch);
    rootfs.set(recipe.name, layer.path);
    rootfsSeconds[recipe.name] = layer.seconds;
    log(`${recipe.name} root filesystem ${layer.seconds ? `built in ${layer.seconds.toFixed(0)} s` : 'cached'} (${(statSync(layer.path).size / 2 ** 20).toFixed(0)} MiB)`);
  }
  const work = join(cache, `work-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const appStarted = Date.now();
    const appTar = appLayer(work, epoch);
    const appSeconds = (Date.now() - appStarted) / 1000;
    log(`app layer in ${appSeconds.toFixed(0)} s (${(statSync(appTar).size / 2 ** 20).toFixed(0)} MiB)`);

    // The layout is made aside and moved in whole, so an interrupted build never looks finished.
    const layout = imageLayout(version, cache);
    const next = join(work, 'oci');
    const revision = gitRevision();
    const written = await writeOciLayout(
      next,
      IMAGE_RECIPES.map((recipe) => ({
        ref: imageRef(recipe.name, version),
        config: imageConfig(recipe, { version, revision, created, suite: rootfsOf(recipe).suite }),
        layers: [rootfs.get(recipe.rootfs)!, appTar],
      })),
    );
    const summary = written.map((w, i) => ({ name: IMAGE_RECIPES[i]!.name, ...w }));
    rmSync(layout, { recursive: true, force: true });
    renameSync(next, layout);
    return { layout, version, images: summary, rootfs: Object.fromEntries(rootfs), seconds: { rootfs: rootfsSeconds, app: appSeconds, total: (Date.now() - started) / 1000 } };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Where `npm run images` keeps its root filesystems and writes the layout. */
export const imageCache = (env: Record<string, string | undefined> = process.env) => env.BSO_IMAGE_CACHE || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'bso-images');
export const imageLayout = (version: string, cache = imageCache()) => join(cache, `oci-${version}`);

const rootfsOf = (recipe: ImageRecipe) => ROOTFS_RECIPES.find((r) => r.name === recipe.rootfs)!;
export const imageRef = (name: string, version: string) => `bso/${name}:${version}`;

if (import.meta.url === `file://${process.argv[1]}`) {
  buildImages({ mirror: process.env.DEBIAN_MIRROR || undefined }).then(
    (built) => console.log(JSON.stringify(built)),
    (err: unknown) => {
      console.error(`images: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    },
  );
}
