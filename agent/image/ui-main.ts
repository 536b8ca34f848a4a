/**
 * Entry point of the browser UI image (`node dist/agent/image/ui-main.js`), the pod's second
 * container for the chromium profile. Plain Chromium has no UI of its own, so this serves one page
 * that points at what the router already offers for the session: DevTools' target list and the
 * inspector, through the session's proxy.
 */
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { z } from 'zod';
import { readNodeEnv } from '../../shared/node-env.js';
import { runIfMain } from '../../shared/node-main.js';

const UiImageEnv = z.object({ PORT: z.coerce.number().int().min(1).max(65535).default(8080) });

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Browser session</title></head>
<body>
<h1>Browser session</h1>
<p>This session's browser is plain Chromium. Its DevTools targets are listed at
<a href="../json/list">json/list</a> beside this page (under the session's proxy path); open a
target's <code>devtoolsFrontendUrl</code> to inspect it.</p>
</body></html>
`;

export function uiApp(): Hono {
  const app = new Hono();
  app.get('/', (c) => c.html(PAGE));
  app.get('/healthz', (c) => c.text('ok'));
  return app;
}

export async function startUiImage(env: Record<string, string | undefined>) {
  const { PORT } = UiImageEnv.parse(env);
  const server = serve({ fetch: uiApp().fetch, port: PORT, hostname: '0.0.0.0' });
  await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
  return { close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

runIfMain(import.meta.url, () => startUiImage(readNodeEnv()));
