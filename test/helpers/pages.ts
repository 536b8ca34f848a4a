import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A loopback HTTP server for browsers to visit; `/slow` holds the response until released, `/download` is an attachment. */
export async function startPageServer(): Promise<{ url: string; close(): Promise<void>; releaseSlow(): void; slowWaiting(): number }> {
  const held: Array<() => void> = [];
  const server: Server = createServer((req, res) => {
    if (req.url?.startsWith('/slow')) {
      held.push(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('finally'));
      return;
    }
    if (req.url?.startsWith('/download')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-disposition': 'attachment; filename="bso-download.txt"' }).end('downloaded');
      return;
    }
    if (req.url?.startsWith('/echo')) {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-method': req.method ?? '' }).end(Buffer.concat(chunks)));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!doctype html><html><head><title>bso test page</title></head>
<body style="background:#2a6"><h1 id="greeting">Hello from loopback</h1>
<script>window.answer = 6 * 7;</script></body></html>`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    releaseSlow: () => held.splice(0).forEach((f) => f()),
    slowWaiting: () => held.length,
    close: () =>
      new Promise((r) => {
        held.splice(0).forEach((f) => f());
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
