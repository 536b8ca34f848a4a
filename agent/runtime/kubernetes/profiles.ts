import type { V1EnvVar, V1Probe } from '@kubernetes/client-node';
import { sleep, type Clock } from '../../../shared/clock.js';
import type { Session, SessionEndpoints } from '../../../shared/session.js';
import { cdpExchange } from '../cdp-socket.js';
import { devtoolsVersion } from '../devtools.js';

export const PROFILE_NAMES = ['chromium', 'steel'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];

/** What a profile knows when the pod is built: the ports, and the router's address as the client saw it. */
export type PodContext = { apiPort: number; uiPort: number; publicUrl?: string; sessionUrl?: string };

/** What the router needs to reach a started browser, beyond its address. */
export type Reached = Required<Pick<SessionEndpoints, 'browserWsPath'>> & Pick<SessionEndpoints, 'links'>;

export type ReachOptions = { adopting: boolean; timeoutMs: number; signal: AbortSignal; clock: Clock };

/**
 * How to talk to one kind of browser image: its environment, how the kubelet judges it ready, where
 * its CDP is, how a session's options reach it, and how it is told the session ends.
 */
export interface ImageProfile {
  readonly name: ProfileName;
  /** Where the browser container writes beyond /tmp, HOME and /dev/shm (its root filesystem is read-only): each an emptyDir. */
  readonly writablePaths: Readonly<Record<string, string>>;
  browserEnv(session: Session, ctx: PodContext): V1EnvVar[];
  uiEnv(ctx: PodContext): V1EnvVar[];
  readinessProbe(apiPort: number): V1Probe;
  /** Once the pod is Ready: makes sure CDP answers and the session's options are applied. */
  reach(session: Session, host: string, port: number, opts: ReachOptions): Promise<Reached>;
  /** Before the Job goes: lets the image end the session its own way. Bounded; never throws. */
  release(sessionId: string, host: string, port: number): Promise<void>;
  /**
   * Present when the image can run warm (launched before its session, which claims it as it is and
   * sets its options over CDP): a warm pod, once Ready, is reached by this. steel cannot: its pod is
   * made for its session (the URLs it writes name the session, and its options relaunch its browser).
   */
  readonly reachWarm?: (host: string, port: number, signal: AbortSignal) => Promise<Reached>;
  /** A warm pod's browser environment (nothing of a session): present with `reachWarm`. */
  readonly warmEnv?: (ctx: PodContext) => V1EnvVar[];
}

/** `BROWSER_PROFILE` when set, else what the image's name says (the specification names steel's images). */
export function profileNameFor(explicit: ProfileName | undefined, apiImage: string): ProfileName {
  if (explicit) return explicit;
  return /(^|\/)steel-browser(-api)?(:|@|$)/.test(apiImage) ? 'steel' : 'chromium';
}

export const imageProfile = (name: ProfileName): ImageProfile => (name === 'steel' ? steelProfile : chromiumProfile);

/**
 * Plain Chromium (or headless-shell) with DevTools on its port: `/json/version` there names the
 * browser's WebSocket. The contract this project's own browser image keeps: it reads the session's
 * options from `BSO_OPTIONS` (JSON: `userAgent`, `viewport`, `locale`, `timezone` become launch flags
 * and `TZ`; other keys are the client's own data) and serves CDP on the pod's port.
 */
const chromiumProfile: ImageProfile = {
  name: 'chromium',
  writablePaths: {},
  browserEnv: (session, ctx) => [{ name: 'BSO_SESSION_ID', value: session.id }, { name: 'BSO_OPTIONS', value: JSON.stringify(session.options) }, ...chromiumPorts(ctx).browser],
  uiEnv: (ctx) => chromiumPorts(ctx).ui,
  warmEnv: (ctx) => chromiumPorts(ctx).browser,
  readinessProbe: (port) => ({ httpGet: { path: '/json/version', port }, periodSeconds: 1, failureThreshold: 3 }),
  reach: (_session, host, port, { signal }) => browserWsPathOf(host, port, signal),
  release: async () => {},
  reachWarm: (host, port, signal) => browserWsPathOf(host, port, signal),
};

/** The ports this project's images listen on (`PORT`; 9222 and 8080 unless the agent says otherwise). */
const chromiumPorts = (ctx: PodContext) => ({
  browser: [{ name: 'PORT', value: String(ctx.apiPort) }],
  ui: [{ name: 'PORT', value: String(ctx.uiPort) }],
});

async function browserWsPathOf(host: string, port: number, signal: AbortSignal): Promise<Reached> {
  const version = await devtoolsVersion(host, port, 5000, signal);
  const path = version?.webSocketDebuggerUrl ? new URL(version.webSocketDebuggerUrl).pathname : null;
  if (!path) throw new Error(`the browser at ${host}:${port} gave no usable /json/version`);
  return { browserWsPath: path };
}

/** steel's own fields a client may set (the rest of its schema touches the container: paths, Selenium, logging). */
const STEEL_FIELDS = new Set([
  'proxyUrl',
  'blockAds',
  'sessionContext',
  'optimizeBandwidth',
  'skipFingerprintInjection',
  'deviceConfig',
  'fullscreen',
  'userPreferences',
  'credentials',
]);
const STEEL_CALL_TIMEOUT_MS = 10_000;
const STEEL_RELEASE_TIMEOUT_MS = 5000;
/** steel relaunches its browser for a session: 1.7–3.7 s measured, far more on a loaded node. */
const STEEL_CREATE_TIMEOUT_MS = 60_000;

/**
 * steel-browser's API image: one API process, one browser. Its `/v1/health` answers before any
 * browser exists, so the kubelet's probe is only the first half of readiness; the agent then waits
 * for a CDP answer on `ws://pod:port/`, creates steel's session with the options (steel relaunches its
 * browser with them), and waits for CDP again. Ended with steel's release before the Job goes.
 */
const steelProfile: ImageProfile = {
  name: 'steel',
  // steel keeps each session's files in /files (NODE_ENV=production, what its image runs) and creates it at start.
  writablePaths: { files: '/files' },
  browserEnv(session, ctx) {
    const env: V1EnvVar[] = [
      { name: 'BSO_SESSION_ID', value: session.id },
      { name: 'PORT', value: String(ctx.apiPort) },
      { name: 'HOST', value: '0.0.0.0' },
    ];
    // The URLs steel writes (websocketUrl, debugUrl, its pages' own sockets) point through the router:
    // at the session's own host when the router serves steel there (where its cookie lets steel's own
    // pages in), else at the session's proxy path.
    const base = ctx.sessionUrl ?? ctx.publicUrl;
    if (base) {
      const pub = new URL(base);
      const domain = ctx.sessionUrl ? pub.host : `${pub.host}${pub.pathname.replace(/\/+$/, '')}/sessions/${session.id}/proxy`;
      env.push({ name: 'DOMAIN', value: domain }, { name: 'CDP_DOMAIN', value: domain }, { name: 'USE_SSL', value: String(pub.protocol === 'https:') });
    }
    // steel has no locale field; its browser takes launch flags from CHROME_ARGS (split on spaces: the
    // locale's pattern has none).
    const locale = session.options.locale;
    if (locale) env.push({ name: 'CHROME_ARGS', value: `--lang=${locale} --accept-lang=${locale}` });
    return env;
  },
  uiEnv: (ctx) => [{ name: 'API_URL', value: `http://127.0.0.1:${ctx.apiPort}` }],
  readinessProbe: (port) => ({ httpGet: { path: '/v1/health', port }, periodSeconds: 1, failureThreshold: 3 }),
  async reach(session, host, port, opts) {
    const base = `http://${host}:${port}`;
    const deadline = opts.clock.now() + opts.timeoutMs;
    await untilCdpAnswers(`ws://${host}:${port}/`, deadline, opts);
    if (opts.adopting) {
      // A restarted agent takes over: steel still runs the session, or the session is gone.
      const current = await steelCall(`${base}/v1/sessions/${session.id}`, 'GET', undefined, STEEL_CALL_TIMEOUT_MS, opts.signal);
      if (current.status !== 'live' && current.status !== 'idle') throw new Error(`steel no longer runs the session (its status: ${String(current.status)})`);
      return { browserWsPath: '/', links: steelLinks(current, session.id) };
    }
    const created = await steelCall(
      `${base}/v1/sessions`,
      'POST',
      steelSessionBody(session),
      Math.max(1000, Math.min(STEEL_CREATE_TIMEOUT_MS, deadline - opts.clock.now())),
      opts.signal,
    );
    await untilCdpAnswers(`ws://${host}:${port}/`, deadline, opts);
    return { browserWsPath: '/', links: steelLinks(created, session.id) };
  },
  async release(sessionId, host, port) {
    await steelCall(`http://${host}:${port}/v1/sessions/${sessionId}/release`, 'POST', {}, STEEL_RELEASE_TIMEOUT_MS).catch(() => {});
  },
};

/** The session's options as steel's `POST /v1/sessions` body: known ones mapped, steel's own passed, the rest in `extra`. */
export function steelSessionBody(session: Session): Record<string, unknown> {
  const { userAgent, viewport, locale: _locale, timezone, extra, ...rest } = session.options;
  const body: Record<string, unknown> = { sessionId: session.id };
  if (userAgent) body.userAgent = userAgent;
  if (viewport) body.dimensions = { width: viewport.width, height: viewport.height };
  if (timezone) body.timezone = timezone;
  const others: Record<string, unknown> = extra && typeof extra === 'object' && !Array.isArray(extra) ? { ...extra } : extra === undefined ? {} : { extra };
  for (const [key, value] of Object.entries(rest)) {
    if (STEEL_FIELDS.has(key)) body[key] = value;
    else others[key] = value;
  }
  if (Object.keys(others).length) body.extra = others;
  return body;
}

/** steel's URLs, as paths under the session's proxy: the router gives them back with its own address and the session's token. */
export function steelLinks(answer: Record<string, unknown>, sessionId: string): NonNullable<SessionEndpoints['links']> {
  const path = (value: unknown): string | undefined => {
    if (typeof value !== 'string' || !value) return undefined;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return undefined;
    }
    const proxied = `/sessions/${sessionId}/proxy`;
    const at = url.pathname.indexOf(proxied);
    const rest = at >= 0 ? url.pathname.slice(at + proxied.length) || '/' : url.pathname;
    return (rest + url.search).slice(0, 512);
  };
  return { debug: path(answer.debugUrl), viewer: path(answer.sessionViewerUrl), websocket: path(answer.websocketUrl) };
}

/** Health alone answers before steel has a browser: ready is health 200 AND a CDP command answered. */
async function untilCdpAnswers(url: string, deadline: number, opts: ReachOptions): Promise<void> {
  const health = url.replace(/^ws/, 'http') + 'v1/health';
  let last = 'no answer yet';
  for (;;) {
    const left = deadline - opts.clock.now();
    if (left <= 0) throw new Error(`steel's browser did not answer CDP in time (${last})`);
    try {
      const res = await fetch(health, { signal: AbortSignal.any([opts.signal, AbortSignal.timeout(Math.min(3000, left))]) });
      await res.body?.cancel();
      if (res.status !== 200) throw new Error(`health answered ${res.status}`);
      await cdpExchange(url, [{ method: 'Browser.getVersion' }], { timeoutMs: Math.min(3000, left), signal: opts.signal });
      return;
    } catch (err) {
      if (opts.signal.aborted) throw opts.signal.reason ?? err;
      last = (err as Error).message;
    }
    await sleep(opts.clock, 250, opts.signal);
  }
}

async function steelCall(url: string, method: 'GET' | 'POST', body: unknown, timeoutMs: number, signal?: AbortSignal): Promise<Record<string, unknown>> {
  const timeout = AbortSignal.timeout(timeoutMs);
  const res = await fetch(url, {
    method,
    signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  const text = (await res.text()).slice(0, 64 * 1024);
  if (!res.ok) throw new Error(`steel answered ${method} ${new URL(url).pathname} with ${res.status}: ${text.slice(0, 300)}`);
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // below
  }
  throw new Error(`steel answered ${method} ${new URL(url).pathname} with something that is not a JSON object`);
}
