import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { memoizeAssets, mergeProtocols, type BundledAssets } from '../http/docs.js';

/** The installed packages' files, read once on first use. */
export function nodeAssets(): BundledAssets {
  const require = createRequire(import.meta.url);
  const read = (specifier: string) => readFile(require.resolve(specifier), 'utf8');
  return memoizeAssets({
    swaggerUiCss: () => read('swagger-ui-dist/swagger-ui.css'),
    swaggerUiBundle: () => read('swagger-ui-dist/swagger-ui-bundle.js'),
    devtoolsProtocol: async () => {
      const [browser, js] = await Promise.all([read('devtools-protocol/json/browser_protocol.json'), read('devtools-protocol/json/js_protocol.json')]);
      return mergeProtocols(JSON.parse(browser), JSON.parse(js));
    },
  });
}
