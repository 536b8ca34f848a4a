import CDP from 'chrome-remote-interface';
import { expect } from 'vitest';
import { withViewer } from './viewer.js';

/**
 * `/docs` in a real browser that may reach nothing but the router (as on a private cluster): every
 * other request is aborted and counted. Returns the API paths Swagger UI rendered.
 */
export async function renderedDocs(routerUrl: string): Promise<{ paths: string[]; offRouter: string[]; failed: string[] }> {
  const origin = new URL(routerUrl).origin;
  return withViewer(async (browser) => {
    const page = await browser.contexts()[0]!.newPage();
    const offRouter: string[] = [];
    const failed: string[] = [];
    await page.route('**/*', (route) => {
      if (new URL(route.request().url()).origin === origin) return route.continue();
      offRouter.push(route.request().url());
      return route.abort();
    });
    page.on('response', (r) => r.status() >= 400 && failed.push(`${r.status()} ${r.url()}`));
    page.on('pageerror', (e) => failed.push(e.message));
    await page.goto(`${origin}/docs`);
    await page.waitForFunction(() => document.querySelectorAll('.opblock-summary-path').length >= 5, null, { timeout: 30_000 });
    const paths = await page.$$eval('.opblock-summary-path', (els) => els.map((e) => e.getAttribute('data-path') ?? e.textContent ?? ''));
    const png = await page.screenshot();
    expect(png.byteLength).toBeGreaterThan(10_000);
    return { paths, offRouter, failed };
  });
}

/**
 * chrome-remote-interface as its README shows it: `CDP({ target })` with a WebSocket URL and nothing
 * else, so it fetches `/json/protocol` from that URL's host and port (the router's root).
 */
export async function criDefaultConnect(cdpUrl: string): Promise<string> {
  const client = await CDP({ target: cdpUrl });
  try {
    // A browser endpoint: the browser's own domain answers (a page's Runtime is not on it).
    return (await client.Browser.getVersion()).product;
  } finally {
    await client.close();
  }
}
