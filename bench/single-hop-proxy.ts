/**
 * The comparison point: a single-hop http-proxy-3 in its own process, the way steel-browser and
 * browserless put a proxy in front of Chromium. Prints its port, then serves until killed.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createProxyServer } from 'http-proxy-3';

const target = process.argv[2];
if (!target) throw new Error('usage: single-hop-proxy.ts http://127.0.0.1:PORT');
const proxy = createProxyServer({ target, ws: true });
proxy.on('error', () => {});
const server = createServer((req, res) => proxy.web(req, res));
server.on('upgrade', (req, socket, head) => proxy.ws(req, socket, head));
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ msg: 'proxy listening', port: (server.address() as AddressInfo).port })));
process.on('SIGTERM', () => process.exit(0));
