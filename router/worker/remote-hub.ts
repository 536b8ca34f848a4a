import { fromWire, type WireError } from '../../shared/errors.js';
import type { RpcMethod, RpcParams, RpcResult } from '../../shared/tunnel/protocol.js';
import type { ProxyTarget } from '../data-plane/data-plane.js';
import type { AgentInfo, BrowserHealth, Placement, TunnelHub } from '../tunnel/hub.js';
import type { WorkerEnv } from './env.js';

/** Headers that carry a resolved proxy target from the Worker to the cluster's hub object. */
export const TARGET_HEADERS = {
  session: 'x-bso-session',
  path: 'x-bso-path',
  wsBase: 'x-bso-ws-base',
  connectToken: 'x-bso-connect-token',
  setCookie: 'x-bso-set-cookie',
  target: 'x-bso-target',
} as const;

/** The stateless Worker's hub: every question goes to the cluster's Durable Object, or the directory. */
export class RemoteHub implements TunnelHub {
  constructor(private readonly env: WorkerEnv) {}

  async agents(): Promise<AgentInfo[]> {
    return (await (await this.directory('/agents')).json()) as AgentInfo[];
  }

  async place(requestedCluster?: string): Promise<AgentInfo | null> {
    const q = requestedCluster ? `?cluster=${encodeURIComponent(requestedCluster)}` : '';
    const answer = (await (await this.directory(`/place${q}`)).json()) as AgentInfo | null | { error: WireError };
    if (answer && 'error' in answer) throw fromWire(answer.error);
    return answer;
  }

  async call<M extends RpcMethod>(to: Placement, method: M, params: RpcParams<M>, timeoutMs: number): Promise<RpcResult<M>> {
    const res = await this.hub(to.cluster).fetch('https://hub/rpc', { method: 'POST', body: JSON.stringify({ to, method, params, timeoutMs }) });
    const body = (await res.json()) as { ok: true; value: RpcResult<M> } | { ok: false; error: WireError };
    if (!body.ok) throw fromWire(body.error);
    return body.value;
  }

  async observe(to: Placement, sessionId: string): Promise<{ connected: boolean; health: BrowserHealth | null }> {
    const res = await this.hub(to.cluster).fetch(`https://hub/observe?${query(to)}&session=${encodeURIComponent(sessionId)}`);
    return (await res.json()) as { connected: boolean; health: BrowserHealth | null };
  }

  /** The data plane of the Worker: the whole request, upgrade included, goes to the hub object that
   * holds the agent's tunnel, with the target the Worker resolved. */
  forward(t: ProxyTarget, req: Request): Promise<Response> {
    const headers = new Headers(req.headers);
    // These headers are the Worker's word to the hub object: a client's own copies never pass.
    for (const h of Object.values(TARGET_HEADERS)) headers.delete(h);
    headers.set(TARGET_HEADERS.session, JSON.stringify(t.session));
    headers.set(TARGET_HEADERS.path, t.path);
    headers.set(TARGET_HEADERS.wsBase, t.wsBase);
    if (t.connectToken) headers.set(TARGET_HEADERS.connectToken, t.connectToken);
    if (t.setCookie) headers.set(TARGET_HEADERS.setCookie, t.setCookie);
    if (t.target) headers.set(TARGET_HEADERS.target, t.target);
    const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : req.body;
    return this.hub(t.session.cluster).fetch(new Request('https://hub/proxy', { method: req.method, headers, body, duplex: 'half' } as RequestInit));
  }

  private hub(cluster: string) {
    return this.env.HUB.get(this.env.HUB.idFromName(cluster));
  }

  private directory(path: string): Promise<Response> {
    return this.env.DIRECTORY.get(this.env.DIRECTORY.idFromName('directory')).fetch(`https://directory${path}`);
  }
}

const query = (to: Placement) => `cluster=${encodeURIComponent(to.cluster)}${to.node ? `&node=${encodeURIComponent(to.node)}` : ''}`;
