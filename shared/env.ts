import { z } from 'zod';

export type Env = Record<string, string | undefined>;

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Parses `env` with `schema`; a failure names each bad variable and what was wrong with it. */
export function parseEnv<T extends z.ZodType>(schema: T, env: Env): z.infer<T> {
  const res = schema.safeParse(env);
  if (res.success) return res.data;
  const lines = res.error.issues.map((i) => `  ${i.path.join('.') || '(env)'}: ${i.message}`);
  throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
}

/** An env var that must be an integer within bounds; empty counts as unset. */
export const intVar = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess((v) => (v === '' || v === undefined ? undefined : v), z.coerce.number().int().min(min).max(max).default(def));

/** An optional integer within bounds, for defaults that depend on other settings; empty counts as unset. */
export const optionalInt = (min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess((v) => (v === '' || v === undefined ? undefined : v), z.coerce.number().int().min(min).max(max).optional());

export const optionalString = () => z.preprocess((v) => (v === '' ? undefined : v), z.string().optional());

export const logLevelVar = () =>
  z.preprocess((v) => (v === '' || v === undefined ? 'info' : String(v).toLowerCase()), z.enum(['trace', 'debug', 'info', 'warn', 'error', 'silent']));

/** A host name or address that stays on this machine (127.0.0.0/8, ::1, localhost). */
export const isLoopbackHost = (host: string): boolean => host === 'localhost' || host === '::1' || host === '[::1]' || /^127(\.\d{1,3}){3}$/.test(host);
