/**
 * What each image is, beside the Dockerfile that is its public recipe: the root filesystem it starts
 * from, and the user, command, ports and environment of the Dockerfile's stage of the same name (the
 * images suite checks the two agree).
 */
export type RootfsRecipe = { name: 'base' | 'chromium'; suite: string; packages: string[] };

/** Debian bookworm, as `node:20-bookworm-slim` is; Chromium where the Dockerfile installs it. */
export const ROOTFS_RECIPES: RootfsRecipe[] = [
  { name: 'base', suite: 'bookworm', packages: ['ca-certificates'] },
  { name: 'chromium', suite: 'bookworm', packages: ['ca-certificates', 'chromium', 'fonts-liberation'] },
];

export type ImageRecipe = {
  /** The Dockerfile stage it matches, and its name: `bso/<name>:<version>`. */
  name: 'router' | 'agent' | 'browser-api' | 'browser-ui';
  rootfs: RootfsRecipe['name'];
  description: string;
  user: string;
  cmd: string[];
  ports: number[];
};

export const IMAGE_RECIPES: ImageRecipe[] = [
  { name: 'router', rootfs: 'base', description: 'The router: REST API, tunnel endpoint and CDP proxy', user: '10001:10001', cmd: ['node', 'dist/router/node.js'], ports: [3000] },
  {
    name: 'agent',
    rootfs: 'chromium',
    description: 'The agent: dials the router and runs sessions as Kubernetes Jobs (or local Chromium)',
    user: '10001:10001',
    cmd: ['node', 'dist/agent/main.js'],
    ports: [9464],
  },
  {
    name: 'browser-api',
    rootfs: 'chromium',
    description: "The chromium profile's browser: Debian Chromium with DevTools on PORT",
    user: '1000:1000',
    cmd: ['node', 'dist/agent/image/browser-main.js'],
    ports: [9222],
  },
  { name: 'browser-ui', rootfs: 'base', description: "The chromium profile's UI container", user: '1000:1000', cmd: ['node', 'dist/agent/image/ui-main.js'], ports: [8080] },
];

export const IMAGE_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NODE_ENV=production'];
export const IMAGE_WORKDIR = '/app';

/** The OCI image configuration of one image. */
export function imageConfig(recipe: ImageRecipe, at: { version: string; revision: string; created: string; suite: string }) {
  return {
    created: at.created,
    architecture: 'amd64',
    os: 'linux',
    config: {
      User: recipe.user,
      Env: IMAGE_ENV,
      Cmd: recipe.cmd,
      WorkingDir: IMAGE_WORKDIR,
      ExposedPorts: Object.fromEntries(recipe.ports.map((p) => [`${p}/tcp`, {}])),
      Labels: {
        'org.opencontainers.image.title': `bso-${recipe.name}`,
        'org.opencontainers.image.description': recipe.description,
        'org.opencontainers.image.version': at.version,
        'org.opencontainers.image.revision': at.revision,
        'org.opencontainers.image.licenses': 'MIT',
        'org.opencontainers.image.base.name': `debian:${at.suite}`,
      },
    },
    history: [
      { created: at.created, created_by: `mmdebstrap --variant=minbase ${at.suite} (${recipe.rootfs}) + node ${process.version}` },
      { created: at.created, created_by: 'npm run build; npm ci --omit=dev (/app)' },
    ],
  };
}
