/**
 * W3C Trace Context (`traceparent`): version-traceid-parentid-flags, lower-case hex. A client's
 * header is carried router → agent → Job annotation and its trace id put on every log line of the
 * session's start, so one search finds a create's whole path.
 */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The header if it is a valid one; otherwise nothing (the spec says to ignore an invalid one). */
export function parseTraceparent(value: string | null | undefined): string | undefined {
  const m = value === null || value === undefined ? null : TRACEPARENT.exec(value.trim());
  if (!m) return undefined;
  const [, version, traceId, parentId] = m;
  if (version === 'ff' || /^0+$/.test(traceId!) || /^0+$/.test(parentId!)) return undefined;
  return m[0];
}

/** The trace id (the part every step shares), for log fields. */
export const traceIdOf = (traceparent: string): string => traceparent.split('-')[1]!;
