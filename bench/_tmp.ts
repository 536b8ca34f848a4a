import { startRedis } from '../harness/processes.js';
import { benchWarmPool } from './warm.js';
const redis = await startRedis();
try {
  const KEY = 'bench-key-0123456789abcdefghijklmnop';
  const r = await benchWarmPool({ redisUrl: redis.url, routerEnv: { PORT: '0', HOST: '127.0.0.1', AGENT_TOKEN: 'bench-token-0123456789abcdef', MAX_SESSIONS: '50', LOG_LEVEL: 'info', API_KEYS: `bench:${KEY}`, SESSION_TOKEN_SECRET: 'bench-session-token-secret-0123456789abcdef', RATE_LIMIT_API: '100000000/min', RATE_LIMIT_CREATE: '100000000/min' }, token: 'bench-token-0123456789abcdef', auth: { authorization: `Bearer ${KEY}` }, creates: 20, cycles: 1 });
  console.log(JSON.stringify(r));
  const lines: string[] = (globalThis as any).warmRouter.lines;
  const i = lines.findIndex((l, k) => k > lines.length - 80 && l.includes('session created'));
  console.log(lines.slice(i - 12, i + 14).map((l) => { const o = JSON.parse(l); return `${o.time.slice(17)} ${o.msg} ${o.operation ?? o.method ?? ''} ${o.ms ?? ''}`; }).join('\n'));
} finally { await redis.stop(); }
