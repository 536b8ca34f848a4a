/**
 * Writes an OCI image layout (image-spec v1.1: `oci-layout`, `index.json`, `blobs/sha256/…`) from
 * uncompressed layer tars and image configurations: what `ctr images import` and `skopeo copy oci:`
 * read. Each manifest in the index carries its reference twice: `org.opencontainers.image.ref.name`
 * (skopeo) and `io.containerd.image.name` (containerd, which wants the registry's host too).
 */
import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, linkSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type LayoutImage = {
  /** `name:tag`, as a pod spec names it (`bso/router:0.1.0`, `registry.k8s.io/pause:3.10.2`). */
  ref: string;
  /** The OCI image configuration without `rootfs`, which is filled in from `layers`. */
  config: Record<string, unknown>;
  /** Uncompressed layer tars, lowest first. */
  layers: string[];
};

export type WrittenImage = { ref: string; manifest: string; bytes: number };

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** `docker.io/` for a reference without a registry host, as containerd's CRI resolves names. */
export function fullyQualified(ref: string): string {
  const first = ref.split('/')[0]!;
  return ref.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost') ? ref : `docker.io/${ref.includes('/') ? ref : `library/${ref}`}`;
}

export async function writeOciLayout(dir: string, images: LayoutImage[]): Promise<WrittenImage[]> {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (mediaType: string, bytes: Buffer) => {
    const digest = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(join(blobs, digest), bytes);
    return { mediaType, digest: `sha256:${digest}`, size: bytes.length };
  };
  const layerDigests = new Map<string, { digest: string; size: number }>();
  const layerOf = async (path: string) => {
    let known = layerDigests.get(path);
    if (!known) {
      const digest = await sha256File(path);
      const blob = join(blobs, digest);
      if (!existsSync(blob)) {
        // A hard link where it can be: root filesystems are hundreds of MiB.
        try {
          linkSync(path, blob);
        } catch {
          copyFileSync(path, blob);
        }
      }
      known = { digest: `sha256:${digest}`, size: statSync(path).size };
      layerDigests.set(path, known);
    }
    return known;
  };
  const written: WrittenImage[] = [];
  const manifests = [];
  for (const image of images) {
    const layers = [];
    for (const path of image.layers) layers.push(await layerOf(path));
    const config = put(
      'application/vnd.oci.image.config.v1+json',
      Buffer.from(JSON.stringify({ ...image.config, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } })),
    );
    const manifest = put(
      'application/vnd.oci.image.manifest.v1+json',
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          config,
          layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
        }),
      ),
    );
    manifests.push({
      ...manifest,
      platform: { architecture: 'amd64', os: 'linux' },
      annotations: { 'io.containerd.image.name': fullyQualified(image.ref), 'org.opencontainers.image.ref.name': image.ref },
    });
    written.push({ ref: image.ref, manifest: manifest.digest, bytes: layers.reduce((n, l) => n + l.size, 0) });
  }
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
  return written;
}
