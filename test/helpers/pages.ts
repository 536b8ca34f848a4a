import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { Page as PuppeteerPage } from 'puppeteer-core';

/**
 * Browsers may not open connections to this host (the agent's firewall keeps their account off it),
 * and tests talk to nothing else: so the test page is served through the client's own request
 * interception (the Fetch domain) at a name that never resolves.
 */
export const PAGES_ORIGIN = 'http://pages.bso.test';

const TEST_PAGE = `<!doctype html><html><head><title>bso test page</title></head>
<body style="background:#2a6"><h1 id="greeting">Hello from the test</h1>
<script>window.answer = 6 * 7;</script></body></html>`;

type PageResponse = { status: number; headers: Record<string, string>; body: string };

/** What the test origin answers: `/download` is an attachment, anything else the test page. */
export function testPageResponse(url: string): PageResponse {
  if (new URL(url).pathname.startsWith('/download'))
    return { status: 200, headers: { 'content-type': 'application/octet-stream', 'content-disposition': 'attachment; filename="bso-download.txt"' }, body: 'downloaded' };
  return { status: 200, headers: { 'content-type': 'text/html' }, body: TEST_PAGE };
}

/** Playwright: every page of `context` gets the test origin. */
export async function serveTestPages(context: BrowserContext): Promise<void> {
  await context.route(`${PAGES_ORIGIN}/**`, (route) => {
    const r = testPageResponse(route.request().url());
    return route.fulfill({ status: r.status, headers: r.headers, body: r.body });
  });
}

/** Playwright over a session's `cdpUrl`: connects, serves the test origin, opens the test page in a new tab. */
export async function openTestPage(cdpUrl: string): Promise<{ browser: Browser; page: Page }> {
  const browser = await chromium.connectOverCDP(cdpUrl);
  const context = browser.contexts()[0] ?? (await browser.newContext());
  await serveTestPages(context);
  const page = await context.newPage();
  await page.goto(`${PAGES_ORIGIN}/`);
  return { browser, page };
}

/** Puppeteer: `page` gets the test origin; other requests go on as they were. */
export async function serveTestPagesPuppeteer(page: PuppeteerPage): Promise<void> {
  await page.setRequestInterception(true);
  page.on('request', (req) => {
    if (!req.url().startsWith(`${PAGES_ORIGIN}/`)) return void req.continue();
    const r = testPageResponse(req.url());
    void req.respond({ status: r.status, headers: r.headers, body: r.body });
  });
}

/** A loopback HTTP server standing for a session's UI container (the agent, not a browser, reaches it); `/slow` holds the response until released, `/download` is an attachment. */
export async function startPageServer(): Promise<{ url: string; close(): Promise<void>; releaseSlow(): void; slowWaiting(): number }> {
  const held: Array<() => void> = [];
  const server: Server = createServer((req, res) => {
    if (req.url?.startsWith('/slow')) {
      held.push(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('finally'));
      return;
    }
    if (req.url?.startsWith('/echo')) {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-method': req.method ?? '' }).end(Buffer.concat(chunks)));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(TEST_PAGE);
  });
  // `/ws`: a WebSocket that echoes each message.
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (ws) => ws.on('message', (data, binary) => ws.send(data, { binary })));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    releaseSlow: () => held.splice(0).forEach((f) => f()),
    slowWaiting: () => held.length,
    close: () =>
      new Promise((r) => {
        held.splice(0).forEach((f) => f());
        for (const ws of wss.clients) ws.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
