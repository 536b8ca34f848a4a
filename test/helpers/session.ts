import type { Session } from '../../shared/session.js';

/** A pending session as the router hands it to an agent: for building its Job without a router. */
export function pendingSession(over: Partial<Session> = {}): Session {
  return {
    id: '0f0e0d0c-1111-4222-8333-444455556666',
    status: 'pending',
    createdAt: 1,
    updatedAt: 1,
    expiresAt: 600_001,
    timeout: 600,
    idleTimeout: 60,
    options: {},
    cluster: 'c1',
    node: 'agent-1',
    ...over,
  };
}
