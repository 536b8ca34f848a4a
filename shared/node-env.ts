import { existsSync } from 'node:fs';
import { parse } from 'dotenv';
import { readFileSync } from 'node:fs';
import type { Env } from './env.js';

/**
 * The one place a Node process reads its environment: `.env` (if present in the working directory)
 * under the real environment, which wins. Composition roots call this once and pass the result on.
 */
export function readNodeEnv(opts: { dotenvPath?: string } = {}): Env {
  const path = opts.dotenvPath ?? '.env';
  const fromFile = existsSync(path) ? parse(readFileSync(path)) : {};
  // eslint-disable-next-line no-restricted-properties -- this is the single sanctioned reader
  return { ...fromFile, ...process.env };
}
