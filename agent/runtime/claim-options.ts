import type { Clock } from '../../shared/clock.js';
import type { Logger } from '../../shared/logger.js';
import type { SessionOptions } from '../../shared/session.js';
import { AgentCdpSession, type CdpConnection } from './cdp-pipe.js';

type AttachedToTarget = { sessionId: string; targetInfo: { type: string; targetId: string }; waitingForDebugger: boolean };

/** Whether a session sets anything `applyOptionsOverCdp` applies (else a warm browser is used as it is). */
export const hasClaimOptions = ({ userAgent, locale, timezone, viewport }: SessionOptions): boolean => Boolean(userAgent || locale || timezone || viewport);

/**
 * A session's options given to a browser launched before the session existed (a warm one), as the
 * launch flags give them to a cold one: user agent, language (`navigator.language`, Accept-Language,
 * `Intl`), viewport and time zone. An agent-owned browser-wide session auto-attaches to every target:
 * the pages open now are set up before this resolves; each page opened later (by a client, a popup)
 * waits for its debugger until it is set up. The overrides last while the session that set them is
 * attached, so it stays attached for the browser's life. Rejects when the pages open now cannot be
 * set up (the caller launches a cold browser instead).
 */
export async function applyOptionsOverCdp(pipe: CdpConnection, options: SessionOptions, deps: { clock: Clock; logger: Logger; timeoutMs: number }): Promise<void> {
  if (!hasClaimOptions(options)) return;
  const { userAgent: askedUserAgent, locale, timezone, viewport } = options;
  const { timeoutMs } = deps;
  // Accept-Language rides on the user agent override: with only a locale, the browser's own user agent.
  const userAgent = askedUserAgent ?? (locale ? (await pipe.call<{ userAgent: string }>('Browser.getVersion', {}, timeoutMs)).userAgent : undefined);
  const setUp = async (target: AgentCdpSession, type: string, waiting: boolean) => {
    const calls: Array<Promise<unknown>> = [];
    if (type === 'page') {
      if (userAgent) calls.push(target.call('Emulation.setUserAgentOverride', { userAgent, ...(locale ? { acceptLanguage: locale } : {}) }, timeoutMs));
      if (locale) calls.push(target.call('Emulation.setLocaleOverride', { locale }, timeoutMs));
      if (timezone) calls.push(target.call('Emulation.setTimezoneOverride', { timezoneId: timezone }, timeoutMs));
      if (viewport)
        calls.push(target.call('Emulation.setDeviceMetricsOverride', { width: viewport.width, height: viewport.height, deviceScaleFactor: 0, mobile: false }, timeoutMs));
    } else if (userAgent && /worker/.test(type)) {
      calls.push(target.call('Network.setUserAgentOverride', { userAgent, ...(locale ? { acceptLanguage: locale } : {}) }, timeoutMs));
    }
    try {
      await Promise.all(calls);
    } finally {
      if (waiting) await target.call('Runtime.runIfWaitingForDebugger', {}, timeoutMs);
    }
  };
  const targets = new Map<string, AgentCdpSession>();
  let claimed = false;
  const openNow: Array<Promise<void>> = [];
  const { sessionId } = await pipe.call<{ sessionId: string }>('Target.attachToBrowserTarget', {}, timeoutMs);
  const browser = new AgentCdpSession(pipe, sessionId, deps.clock, (method, params) => {
    if (method === 'Target.attachedToTarget') {
      const attached = params as AttachedToTarget;
      const target = new AgentCdpSession(pipe, attached.sessionId, deps.clock);
      targets.set(attached.sessionId, target);
      const done = setUp(target, attached.targetInfo.type, attached.waitingForDebugger);
      if (!claimed) openNow.push(done);
      else done.catch((err: unknown) => deps.logger.warn("a new page did not take the session's options", { type: attached.targetInfo.type, err }));
    } else if (method === 'Target.detachedFromTarget') {
      const id = (params as { sessionId: string }).sessionId;
      targets.get(id)?.detached();
      targets.delete(id);
    }
  });
  try {
    // Chromium announces the targets open now before it answers.
    await browser.call('Target.setAutoAttach', { autoAttach: true, waitForDebuggerOnStart: true, flatten: true }, timeoutMs);
    claimed = true;
    await Promise.all(openNow);
  } catch (err) {
    browser.detached();
    for (const target of targets.values()) target.detached();
    throw err;
  }
}
