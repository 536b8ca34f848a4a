import type { Session, SessionEndpoints } from '../../shared/session.js';
import type { DevtoolsMux } from './devtools-mux.js';

/** How a browser ended without being asked to: `clean` when it closed itself normally (a client's
 * `Browser.close`), else a crash; `reason` is a short sentence for the session's record. */
export type BrowserExit = { clean: boolean; reason: string };

export type BrowserHandle = {
  /** Where the agent reaches the browser's ports (a pod); absent for a browser reached by its pipe. */
  endpoints?: SessionEndpoints;
  /** DevTools served by the agent over the browser's pipe (local browsers): `/json/*` and WebSockets. */
  devtools?: DevtoolsMux;
  /** Settles when the browser ends without being asked to. */
  exited: Promise<BrowserExit>;
  /** Where the browser runs, when that is not the agent's own node (a pod's node). */
  node?: string;
};

/** What the router said about a start beyond the session: where clients reach the router, and the
 * session on its own host (the URLs an image hands out point there). */
export type StartContext = { publicUrl?: string; sessionUrl?: string; traceparent?: string };

/** Where browsers run: local Chromium processes, or Kubernetes Jobs. */
export interface BrowserRuntime {
  readonly name: string;
  /** Resolves once the browser answers CDP; rejects (and cleans up) on failure or abort. */
  start(session: Session, signal: AbortSignal, context?: StartContext): Promise<BrowserHandle>;
  /** Idempotent; resolves when nothing of the session is left. */
  stop(id: string): Promise<void>;
  stopAll(): Promise<void>;
  /** True when browsers outlive the agent (Jobs): shutdown leaves them, and a restart adopts them. */
  readonly keepsSessionsOnShutdown?: boolean;
  /** Sessions whose browsers outlived a previous agent, rebuilt from where the runtime keeps them. */
  recover?(): Promise<Session[]>;
  /** Takes over a browser that `recover` found: resolves once it answers, rejects when it is gone. */
  adopt?(session: Session, signal: AbortSignal): Promise<BrowserHandle>;
  /** Ids of every session the runtime holds a browser for, whether this agent knows it or not. */
  present?(): string[];
  init?(): Promise<void>;
  close?(): Promise<void>;
}
