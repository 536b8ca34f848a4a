import type { Session, SessionEndpoints } from '../../shared/session.js';

export type BrowserHandle = {
  endpoints: SessionEndpoints;
  /** Settles with a human-readable reason when the browser ends without being asked to. */
  exited: Promise<string>;
  /** Where the browser runs, when that is not the agent's own node (a pod's node). */
  node?: string;
};

/** Where browsers run: local Chromium processes, or (later) Kubernetes Jobs. */
export interface BrowserRuntime {
  readonly name: string;
  /** Resolves once the browser answers CDP; rejects (and cleans up) on failure or abort. */
  start(session: Session, signal: AbortSignal): Promise<BrowserHandle>;
  /** Idempotent; resolves when nothing of the session is left. */
  stop(id: string): Promise<void>;
  stopAll(): Promise<void>;
  /** True when browsers outlive the agent (Jobs): shutdown leaves them, and a restart adopts them. */
  readonly keepsSessionsOnShutdown?: boolean;
  /** Sessions already running when the agent starts, rebuilt from where the runtime keeps them. */
  recover?(): Promise<Session[]>;
  init?(): Promise<void>;
  close?(): Promise<void>;
}
