/**
 * Entry point of the browser image (`node dist/agent/image/browser-main.js`): reads the chromium
 * profile's contract from its environment (`PORT`, `BSO_OPTIONS`), starts the browser, and exits with
 * it. The pod is the boundary around it: a non-root user, no capabilities, a read-only root, the
 * runtime's seccomp profile and no ServiceAccount token.
 */
import { z } from 'zod';
import { createLogger } from '../../shared/logger.js';
import { readNodeEnv } from '../../shared/node-env.js';
import { runIfMain } from '../../shared/node-main.js';
import { SessionOptions } from '../../shared/session.js';
import { namespaceSandboxAvailable, startBrowserContainer } from './browser.js';

const BrowserImageEnv = z.object({
  PORT: z.coerce.number().int().min(1).max(65535).default(9222),
  BSO_OPTIONS: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined || raw === '') return undefined;
      try {
        return SessionOptions.parse(JSON.parse(raw));
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `BSO_OPTIONS is not the session's options: ${(err as Error).message}` });
        return z.NEVER;
      }
    }),
  CHROMIUM_PATH: z.string().min(1).default('/usr/bin/chromium'),
  /** `auto`: Chromium's own sandbox where the pod lets it make one, else the pod alone. */
  BROWSER_SANDBOX: z.enum(['auto', 'on', 'off']).default('auto'),
  BROWSER_START_TIMEOUT_MS: z.coerce.number().int().min(1000).max(300_000).default(60_000),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
});
export type BrowserImageConfig = z.infer<typeof BrowserImageEnv>;

export function loadBrowserImageConfig(env: Record<string, string | undefined>): BrowserImageConfig {
  const parsed = BrowserImageEnv.safeParse(env);
  if (!parsed.success) throw new Error(`invalid browser image environment: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

export async function startBrowserImage(config: BrowserImageConfig) {
  const logger = createLogger({ level: config.LOG_LEVEL, base: { component: 'browser' } });
  if (process.getuid?.() === 0) throw new Error('the browser image does not run as root: run it as an unprivileged user (the Job sets runAsUser)');
  const sandbox = config.BROWSER_SANDBOX === 'on' || (config.BROWSER_SANDBOX === 'auto' && namespaceSandboxAvailable());
  if (!sandbox) logger.info('chromium runs without its own sandbox: this pod may not create user namespaces; the pod is its boundary');
  const container = await startBrowserContainer({
    host: '0.0.0.0',
    port: config.PORT,
    chromiumPath: config.CHROMIUM_PATH,
    noSandbox: !sandbox,
    options: config.BSO_OPTIONS,
    timeoutMs: config.BROWSER_START_TIMEOUT_MS,
  });
  logger.info('browser ready', { port: config.PORT, sandbox });
  void container.chromium.exited.then(({ code, signal, stderrTail }) => {
    logger.error('chromium exited', { code, signal, stderr: stderrTail.trim().split('\n').slice(-5).join('\n') });
    process.exit(typeof code === 'number' && code !== 0 ? code : 1);
  });
  return { close: () => container.stop() };
}

runIfMain(import.meta.url, () => startBrowserImage(loadBrowserImageConfig(readNodeEnv())));
