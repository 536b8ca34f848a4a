import type { Env, Hono } from 'hono';

/**
 * Files the router serves from the packages it ships with, so `/docs` works where the public internet
 * is out of reach (a private cluster) and clients find the DevTools protocol description where
 * chrome-remote-interface looks for it. Each runtime supplies them its own way: Node reads the
 * installed packages, the Worker has them bundled.
 */
export type BundledAssets = {
  swaggerUiCss(): Promise<string>;
  swaggerUiBundle(): Promise<string>;
  /** The DevTools protocol (browser and JavaScript domains) as Chromium's `/json/protocol` answers it. */
  devtoolsProtocol(): Promise<string>;
};

type ProtocolFile = { version: unknown; domains: unknown[] };

/** One description from devtools-protocol's two files, the shape a browser's `/json/protocol` has. */
export const mergeProtocols = (browser: ProtocolFile, js: ProtocolFile): string => JSON.stringify({ version: browser.version, domains: [...browser.domains, ...js.domains] });

/** Reads each asset once, on first use: the router starts without parsing 3 MB it may never serve. */
export function memoizeAssets(assets: BundledAssets): BundledAssets {
  const once = (load: () => Promise<string>) => {
    let value: Promise<string> | undefined;
    return () => {
      value ??= load().catch((err: unknown) => {
        value = undefined;
        throw err;
      });
      return value;
    };
  };
  return { swaggerUiCss: once(assets.swaggerUiCss), swaggerUiBundle: once(assets.swaggerUiBundle), devtoolsProtocol: once(assets.devtoolsProtocol) };
}

/** Paths the docs and the protocol description take; public like the OpenAPI document itself. */
export const ASSET_PATHS = ['/docs', '/docs/swagger-ui.css', '/docs/swagger-ui-bundle.js', '/docs/init.js', '/json/protocol'] as const;

const DOCS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Browser session orchestrator API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`;

// A script of its own rather than inline, so a Content-Security-Policy of script-src 'self' allows it.
const DOCS_INIT = `window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true });\n`;

const CACHE = 'public, max-age=3600';

export function registerAssetRoutes<E extends Env>(app: Hono<E>, assets: BundledAssets): void {
  const text = (type: string, load: () => Promise<string>) => async () => new Response(await load(), { headers: { 'content-type': type, 'cache-control': CACHE } });
  app.get('/docs', () => new Response(DOCS_PAGE, { headers: { 'content-type': 'text/html; charset=utf-8' } }));
  app.get('/docs/swagger-ui.css', text('text/css; charset=utf-8', assets.swaggerUiCss));
  app.get('/docs/swagger-ui-bundle.js', text('text/javascript; charset=utf-8', assets.swaggerUiBundle));
  app.get(
    '/docs/init.js',
    text('text/javascript; charset=utf-8', async () => DOCS_INIT),
  );
  app.get('/json/protocol', text('application/json; charset=utf-8', assets.devtoolsProtocol));
}
