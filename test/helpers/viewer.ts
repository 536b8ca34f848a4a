import { chromium, type Browser } from 'playwright-core';
import { killChromium, launchChromium, lookupBrowserUser } from '../../agent/runtime/chromium.js';
import { CHROMIUM } from '../../harness/processes.js';

/**
 * A person's browser looking at the system from outside: a real Chromium with its sandbox, as an
 * account of its own (not the firewalled browser account sessions use, which may not reach the router),
 * always killed afterwards.
 */
export async function withViewer<T>(fn: (browser: Browser) => Promise<T>): Promise<T> {
  const user = process.getuid?.() === 0 ? await lookupBrowserUser('nobody') : undefined;
  const viewer = await launchChromium({ executablePath: CHROMIUM, noSandbox: false, devtools: 'port', user, timeoutMs: 30_000 });
  try {
    const browser = await chromium.connectOverCDP(`http://127.0.0.1:${viewer.port}`);
    try {
      return await fn(browser);
    } finally {
      await browser.close();
    }
  } finally {
    await killChromium(viewer, 2000);
  }
}
