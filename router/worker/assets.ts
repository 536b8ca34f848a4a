import browserProtocol from 'devtools-protocol/json/browser_protocol.json' with { type: 'json' };
import jsProtocol from 'devtools-protocol/json/js_protocol.json' with { type: 'json' };
import swaggerUiBundle from 'swagger-ui-dist/swagger-ui-bundle.js';
import swaggerUiCss from 'swagger-ui-dist/swagger-ui.css';
import { memoizeAssets, mergeProtocols, type BundledAssets } from '../http/docs.js';

/**
 * The same files bundled into the Worker (a Worker has no file system): text modules by the rules in
 * wrangler.toml (the suite runs wrangler's own bundle, harness/edge.ts).
 */
export function workerAssets(): BundledAssets {
  return memoizeAssets({
    swaggerUiCss: async () => swaggerUiCss,
    swaggerUiBundle: async () => swaggerUiBundle,
    devtoolsProtocol: async () => mergeProtocols(browserProtocol, jsProtocol),
  });
}
