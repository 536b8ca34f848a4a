/**
 * What the images suite compares: an image's OCI configuration as `npm run images` wrote it, and the
 * Dockerfile stage of the same name as Docker would resolve it (each stage inherits its base stage's
 * settings; the last USER, CMD, ENTRYPOINT and WORKDIR win; ENV and EXPOSE add up).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DockerfileParser } from 'dockerfile-ast';

export type ImageSettings = { user?: string; cmd?: string[]; entrypoint?: string[]; workdir?: string; env: Record<string, string>; ports: string[] };

export type LayoutEntry = {
  ref: string;
  manifestDigest: string;
  config: {
    config: {
      User?: string;
      Cmd?: string[];
      Entrypoint?: string[] | null;
      WorkingDir?: string;
      Env?: string[];
      ExposedPorts?: Record<string, object>;
      Labels?: Record<string, string>;
    };
    rootfs: { diff_ids: string[] };
  };
  layers: Array<{ digest: string; size: number }>;
};

/** Every image in an OCI layout, by its `org.opencontainers.image.ref.name`. */
export function readLayout(layout: string): Map<string, LayoutEntry> {
  const blob = (digest: string) => readFileSync(join(layout, 'blobs', 'sha256', digest.replace(/^sha256:/, '')), 'utf8');
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const out = new Map<string, LayoutEntry>();
  for (const m of index.manifests) {
    const ref = m.annotations?.['org.opencontainers.image.ref.name'];
    if (!ref) continue;
    const manifest = JSON.parse(blob(m.digest)) as { config: { digest: string }; layers: Array<{ digest: string; size: number }> };
    out.set(ref, { ref, manifestDigest: m.digest, config: JSON.parse(blob(manifest.config.digest)) as LayoutEntry['config'], layers: manifest.layers });
  }
  return out;
}

/** A stage's settings as Docker resolves them (JSON-form CMD/ENTRYPOINT only, as the Dockerfile writes them). */
export function dockerfileStage(dockerfile: string, stage: string): ImageSettings {
  const parsed = DockerfileParser.parse(readFileSync(dockerfile, 'utf8'));
  const stages = new Map<string, { base: string; instructions: Array<{ keyword: string; args: string }> }>();
  let current: { base: string; instructions: Array<{ keyword: string; args: string }> } | undefined;
  for (const instruction of parsed.getInstructions()) {
    const keyword = instruction.getKeyword();
    if (keyword === 'FROM') {
      const [base, , name] = instruction.getArgumentsContent()!.split(/\s+/);
      current = { base: base!, instructions: [] };
      stages.set(name ?? base!, current);
    } else current?.instructions.push({ keyword, args: instruction.getArgumentsContent() ?? '' });
  }
  const resolve = (name: string): ImageSettings => {
    const s = stages.get(name);
    if (!s) return { env: {}, ports: [] };
    const settings = resolve(s.base);
    const out: ImageSettings = { ...settings, env: { ...settings.env }, ports: [...settings.ports] };
    for (const { keyword, args } of s.instructions) {
      if (keyword === 'USER') out.user = args.trim();
      else if (keyword === 'CMD') out.cmd = JSON.parse(args) as string[];
      else if (keyword === 'ENTRYPOINT') out.entrypoint = JSON.parse(args) as string[];
      else if (keyword === 'WORKDIR') out.workdir = args.trim();
      else if (keyword === 'EXPOSE')
        out.ports.push(
          ...args
            .trim()
            .split(/\s+/)
            .map((p) => (p.includes('/') ? p : `${p}/tcp`)),
        );
      else if (keyword === 'ENV') {
        const [key, ...value] = args.trim().split('=');
        out.env[key!] = value.join('=');
      }
    }
    return out;
  };
  if (!stages.has(stage)) throw new Error(`the Dockerfile has no stage ${stage}`);
  return resolve(stage);
}
