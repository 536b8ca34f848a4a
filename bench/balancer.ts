/**
 * The bench's load balancer in its own process (as a real one would be, not sharing the measuring
 * client's CPU): round-robin TCP over the backend ports given. Prints its port, then serves until killed.
 */
import { startBalancer } from '../harness/balancer.js';

const ports = process.argv.slice(2).map(Number);
if (!ports.length || ports.some((p) => !Number.isInteger(p) || p <= 0)) throw new Error('usage: balancer.ts PORT [PORT…]');
const balancer = await startBalancer(() => ports.map((port) => ({ host: '127.0.0.1', port })));
console.log(JSON.stringify({ msg: 'balancer listening', port: balancer.port }));
process.on('SIGTERM', () => void balancer.close().then(() => process.exit(0)));
