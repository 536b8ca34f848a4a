import { randomUUID } from 'node:crypto';
import { isAbsolute, relative, resolve } from 'node:path';
import { AppError } from '../../shared/errors.js';
import type { CdpPipe } from './cdp-pipe.js';
import { describeTarget, describeTargets, describeVersion, type BrowserVersion, type DevtoolsAnswer, type TargetInfo } from './devtools.js';

/** Where a connection's messages go: the client's WebSocket, as the proxy carries it. */
export type CdpClient = {
  /** One text message; false when the client's way is full (then `onceWritable`). */
  send(message: Buffer): boolean;
  onceWritable(fn: () => void): void;
};

export type { DevtoolsAnswer } from './devtools.js';

/** What the mux enforces on every command, whoever sends it. */
export type DevtoolsPolicy = {
  /** The session's profile directory: files a command names must be inside it. */
  profileDir: string;
  /** Where downloads land, whatever path a client asks for. */
  downloadDir: string;
  /** Open DevTools WebSockets per browser. */
  maxConnections: number;
};

const CALL_TIMEOUT_MS = 10_000;

/**
 * The DevTools surface of one browser reached over its pipe: the HTTP endpoints clients expect
 * (`/json/version`, `/json/list`, `/json/new`, `/json/activate`, `/json/close`, `/json/protocol`) and
 * any number of WebSocket clients at once. Each browser-endpoint client gets its own browser session
 * (`Target.attachToBrowserTarget`), each page-endpoint client its own page session, so clients keep
 * the state Chromium keeps per connection (discovery, auto-attach, domains) apart, exactly as with
 * separate sockets to a port. Messages of a client's own session travel without the session id the
 * client never saw; sessions the client attaches from there are its own and pass untouched.
 */
export class DevtoolsMux {
  private readonly connections = new Set<MuxConnection>();
  private readonly blocked = new Set<MuxConnection>();
  private readonly browserId = randomUUID();
  /** Connections attaching now: they hold a slot of `maxConnections` already. */
  private opening = 0;

  constructor(
    readonly pipe: CdpPipe,
    readonly policy: DevtoolsPolicy,
    private readonly protocol: () => Promise<unknown>,
  ) {}

  /** Does the browser answer a command within `timeoutMs`? Never throws. */
  async answers(timeoutMs: number): Promise<boolean> {
    return this.pipe.call('Browser.getVersion', {}, timeoutMs).then(
      () => true,
      () => false,
    );
  }

  /** One DevTools HTTP request (`/json/...`), as Chromium's own server answers it. */
  async http(method: string, pathAndQuery: string): Promise<DevtoolsAnswer> {
    const url = new URL(pathAndQuery, 'http://x');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (path === '/json/version') return { status: 200, body: await this.version() };
    if (path === '/json' || path === '/json/list') return { status: 200, body: await this.list() };
    if (path === '/json/protocol') return { status: 200, body: await this.protocol() };
    if (path === '/json/new') {
      if (method !== 'PUT' && method !== 'GET') return { status: 405, body: `Using unsafe HTTP verb ${method} to invoke /json/new.` };
      const { targetId } = await this.pipe.call<{ targetId: string }>('Target.createTarget', { url: url.search.slice(1) || 'about:blank' }, CALL_TIMEOUT_MS);
      const { targetInfo } = await this.pipe.call<{ targetInfo: TargetInfo }>('Target.getTargetInfo', { targetId }, CALL_TIMEOUT_MS);
      return { status: 200, body: describeTarget(targetInfo, true) };
    }
    const action = /^\/json\/(activate|close)\/([^/]+)$/.exec(path);
    if (action) {
      const targetId = decodeURIComponent(action[2]!);
      const done = await this.pipe.call(action[1] === 'activate' ? 'Target.activateTarget' : 'Target.closeTarget', { targetId }, CALL_TIMEOUT_MS).then(
        () => true,
        () => false,
      );
      if (!done) return { status: 404, body: `No such target id: ${targetId}` };
      return { status: 200, body: action[1] === 'activate' ? 'Target activated' : 'Target is closing' };
    }
    return { status: 404, body: 'not a DevTools endpoint' };
  }

  /** A WebSocket client at `path` (`/devtools/browser/…` or `/devtools/<type>/<targetId>`). */
  async connect(path: string, client: CdpClient): Promise<MuxConnection> {
    if (this.connections.size + this.opening >= this.policy.maxConnections) {
      throw new AppError('TOO_MANY_CONNECTIONS', `this session already has ${this.policy.maxConnections} DevTools connections`, { retryAfterSec: 1 });
    }
    const pathname = path.split('?')[0]!;
    const target = /^\/devtools\/(?!browser(\/|$))[a-z_]+\/([^/]+)$/.exec(pathname)?.[2];
    if (!target && !/^\/devtools\/browser(\/[^/]*)?$/.test(pathname)) throw new AppError('NOT_FOUND', 'not a DevTools WebSocket endpoint');
    let sessionId: string;
    this.opening++;
    try {
      ({ sessionId } = target
        ? await this.pipe.call<{ sessionId: string }>('Target.attachToTarget', { targetId: decodeURIComponent(target), flatten: true }, CALL_TIMEOUT_MS)
        : await this.pipe.call<{ sessionId: string }>('Target.attachToBrowserTarget', {}, CALL_TIMEOUT_MS));
    } catch (err) {
      if (this.pipe.isClosed) throw new AppError('BROWSER_UNREACHABLE', 'the browser is gone');
      throw new AppError('NOT_FOUND', target ? `no target ${target}` : `the browser refused a connection: ${(err as Error).message}`);
    } finally {
      this.opening--;
    }
    const connection = new MuxConnection(this, client, sessionId);
    this.connections.add(connection);
    return connection;
  }

  /** @internal */ forget(connection: MuxConnection): void {
    this.connections.delete(connection);
    this.unblock(connection);
  }

  /** @internal a client is full: stop reading the pipe until it has room (bounded memory, as with a socket). */
  block(connection: MuxConnection): void {
    if (this.blocked.has(connection)) return;
    this.blocked.add(connection);
    this.pipe.pause();
    connection.client.onceWritable(() => this.unblock(connection));
  }

  private unblock(connection: MuxConnection): void {
    if (this.blocked.delete(connection) && this.blocked.size === 0) this.pipe.resume();
  }

  private async version(): Promise<Record<string, string>> {
    const v = await this.pipe.call<BrowserVersion>('Browser.getVersion', {}, CALL_TIMEOUT_MS);
    return describeVersion(v, `/devtools/browser/${this.browserId}`);
  }

  private async list(): Promise<unknown[]> {
    const { targetInfos } = await this.pipe.call<{ targetInfos: TargetInfo[] }>('Target.getTargets', {}, CALL_TIMEOUT_MS);
    return describeTargets(targetInfos, true);
  }
}

const SESSION_ID_KEY = Buffer.from('"sessionId"');
const CLOSE_BRACE = 0x7d;

type ClientCommand = { id: number; method: string; params?: Record<string, unknown>; sessionId?: string };

/** One client's connection: its own session, the sessions it attached, and the policy on its commands. */
export class MuxConnection {
  private readonly owned = new Set<string>();
  private closed = false;

  constructor(
    private readonly mux: DevtoolsMux,
    readonly client: CdpClient,
    private readonly root: string,
  ) {
    this.own(root);
  }

  /**
   * A message from the client. Returns false when the pipe is full: call `onceWritable` before
   * taking more from this client.
   */
  receive(data: Buffer): boolean {
    if (this.closed) return true;
    const text = data.toString('utf8');
    let command: ClientCommand;
    try {
      command = JSON.parse(text) as ClientCommand;
    } catch {
      return this.answerError(undefined, undefined, -32700, 'Message must be a valid JSON');
    }
    if (typeof command !== 'object' || command === null || !Number.isSafeInteger(command.id) || typeof command.method !== 'string') {
      return this.answerError(undefined, undefined, -32600, "Message must have integer 'id' and string 'method' properties");
    }
    const { sessionId } = command;
    if (sessionId !== undefined && (typeof sessionId !== 'string' || !this.owned.has(sessionId))) {
      return this.answerError(command.id, undefined, -32001, 'Session with given id not found.');
    }
    const confined = this.confine(command);
    if (typeof confined === 'string') return this.answerError(command.id, sessionId, -32000, confined);
    // A command naming a session is sent as parsed, so the session checked is the one the browser
    // reads (a text with the key twice could mean another to another parser).
    if (confined || sessionId !== undefined) {
      command.sessionId ??= this.root;
      return this.mux.pipe.send(JSON.stringify(command));
    }
    // The client's own session: its text as it came, with the session appended, not re-serialized.
    return this.mux.pipe.send(`${text.slice(0, text.lastIndexOf('}'))},"sessionId":"${this.root}"}`);
  }

  onceWritable(fn: () => void): void {
    this.mux.pipe.onceWritable(fn);
  }

  /** The client went away: its sessions are detached, which ends what it attached from them. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.owned) this.mux.pipe.unroute(id);
    this.owned.clear();
    this.mux.forget(this);
    if (!this.mux.pipe.isClosed) this.mux.pipe.call('Target.detachFromTarget', { sessionId: this.root }, CALL_TIMEOUT_MS).catch(() => {});
  }

  private own(sessionId: string): void {
    this.owned.add(sessionId);
    this.mux.pipe.route(sessionId, (message, suffixStart) => this.deliver(sessionId, message, suffixStart));
  }

  private deliver(sessionId: string, message: Buffer, suffixStart: number): void {
    if (this.closed) return;
    // Sessions the client attaches from one of its own become its own as well.
    const mention = message.indexOf(SESSION_ID_KEY);
    if (mention !== -1 && mention < suffixStart) this.learnSessions(message.subarray(0, suffixStart));
    let out = message;
    if (sessionId === this.root) {
      // `…,"sessionId":"<root>"}` → `…}`: the client never saw its own session's id.
      message[suffixStart] = CLOSE_BRACE;
      out = message.subarray(0, suffixStart + 1);
    }
    if (!this.client.send(out)) this.mux.block(this);
  }

  private learnSessions(body: Buffer): void {
    let parsed: { method?: string; params?: { sessionId?: unknown }; result?: { sessionId?: unknown } };
    try {
      parsed = JSON.parse(`${body.toString('utf8')}}`) as typeof parsed;
    } catch {
      return;
    }
    if (parsed.method === 'Target.attachedToTarget' && typeof parsed.params?.sessionId === 'string') this.own(parsed.params.sessionId);
    else if (parsed.method === 'Target.detachedFromTarget' && typeof parsed.params?.sessionId === 'string') this.disown(parsed.params.sessionId);
    else if (typeof parsed.result?.sessionId === 'string') this.own(parsed.result.sessionId);
  }

  private disown(sessionId: string): void {
    if (sessionId === this.root) return;
    this.owned.delete(sessionId);
    this.mux.pipe.unroute(sessionId);
  }

  /**
   * The browser runs as an unprivileged user, but that user can still write where any user can
   * (`/tmp`) and read what any user can: commands that name host paths are held to the session's
   * own profile. Downloads go to its download directory whatever path was asked for (Playwright asks
   * for a path on the client's machine); files outside the profile are refused. Returns a refusal,
   * true when the command was changed, false when it passes as it is.
   */
  private confine(command: ClientCommand): string | boolean {
    const { policy } = this.mux;
    const params = command.params;
    if (typeof params !== 'object' || params === null) return false;
    if ((command.method === 'Browser.setDownloadBehavior' || command.method === 'Page.setDownloadBehavior') && params.downloadPath !== undefined) {
      params.downloadPath = policy.downloadDir;
      return true;
    }
    if (command.method === 'DOM.setFileInputFiles' && Array.isArray(params.files)) {
      if (!params.files.every((f) => typeof f === 'string' && inside(policy.profileDir, f))) return 'files outside the session profile cannot be used';
    }
    return false;
  }

  private answerError(id: number | undefined, sessionId: string | undefined, code: number, message: string): boolean {
    const answer: Record<string, unknown> = { id: id ?? 0, error: { code, message } };
    if (sessionId !== undefined) answer.sessionId = sessionId;
    if (!this.client.send(Buffer.from(JSON.stringify(answer)))) this.mux.block(this);
    return true;
  }
}

function inside(dir: string, file: string): boolean {
  const rel = relative(dir, resolve(dir, file));
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel);
}
