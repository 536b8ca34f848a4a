import { toWire } from '../../shared/errors.js';
import type { AgentInfo } from '../tunnel/hub.js';
import { Placer } from '../tunnel/placement.js';
import type { DurableObjectState } from './platform.js';

/**
 * Which agents are connected, across every cluster's hub: hubs register and unregister their agents
 * here, and the stateless Worker asks it where a new session can go. Kept in storage, so it
 * survives eviction.
 */
export class DirectoryObject {
  private agents: Map<string, AgentInfo> | null = null;
  private readonly placer = new Placer();

  constructor(private readonly state: DurableObjectState) {}

  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const agents = await this.load();
    switch (url.pathname) {
      case '/register': {
        const info = (await req.json()) as AgentInfo;
        agents.set(info.agentId, info);
        await this.state.storage.put(`agent:${info.agentId}`, info);
        return Response.json({ ok: true });
      }
      case '/unregister': {
        const { agentId } = (await req.json()) as { agentId: string };
        agents.delete(agentId);
        this.placer.forget(agentId);
        await this.state.storage.delete(`agent:${agentId}`);
        return Response.json({ ok: true });
      }
      case '/agents':
        return Response.json([...agents.values()]);
      case '/load': {
        const { agentId, active } = (await req.json()) as { agentId: string; active: number };
        if (agents.has(agentId)) this.placer.reported(agentId, active);
        return Response.json({ ok: true });
      }
      case '/place': {
        try {
          return Response.json(this.placer.place([...agents.values()], url.searchParams.get('cluster') ?? undefined));
        } catch (err) {
          // CAPACITY_EXHAUSTED, with its Retry-After, for the Worker to answer.
          return Response.json({ error: toWire(err) }, { status: 409 });
        }
      }
      default:
        return Response.json({ error: { code: 'NOT_FOUND', message: 'no such directory route' } }, { status: 404 });
    }
  }

  private async load(): Promise<Map<string, AgentInfo>> {
    if (!this.agents) {
      const stored = await this.state.storage.list<AgentInfo>({ prefix: 'agent:' });
      this.agents = new Map([...stored.values()].map((a) => [a.agentId, a]));
    }
    return this.agents;
  }
}
