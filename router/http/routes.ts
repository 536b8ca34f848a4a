import { createRoute, z } from '@hono/zod-openapi';
import { CreateSessionBody, CreateSessionQuery, ErrorBody, IdempotencyKey, HealthView, ListSessionsQuery, SessionList, SessionStatusView, SessionView } from '../../shared/api.js';
import { SessionId } from '../../shared/session.js';

const json = <T extends z.ZodType>(schema: T, description: string) => ({ content: { 'application/json': { schema } }, description });
const errors = {
  400: json(ErrorBody, 'Invalid request'),
  401: json(ErrorBody, 'No valid API key (UNAUTHORIZED)'),
  403: json(ErrorBody, 'Origin not allowed (FORBIDDEN_ORIGIN)'),
  404: json(ErrorBody, 'Unknown session'),
  503: json(ErrorBody, 'Store or agents unavailable'),
};
const IdParam = z.object({ id: SessionId });

export const createSessionRoute = createRoute({
  method: 'post',
  path: '/sessions',
  summary: 'Create a browser session',
  request: {
    body: { content: { 'application/json': { schema: CreateSessionBody } }, required: false },
    query: CreateSessionQuery,
    headers: z.object({ 'idempotency-key': IdempotencyKey.optional() }),
  },
  responses: {
    200: {
      content: { 'application/x-ndjson': { schema: z.string() } },
      description: 'With `queue` and `Accept: application/x-ndjson`: one JSON object per line, `{"queue":{"position":n}}` while waiting, then `{"session":…}` or `{"error":…}`',
    },
    201: json(SessionView, 'Created; `pending` unless `wait=true` (or `queue`) saw it finish starting'),
    ...errors,
    413: json(ErrorBody, 'Body too large'),
    415: json(ErrorBody, 'Body is not JSON (UNSUPPORTED_MEDIA_TYPE)'),
    429: json(ErrorBody, 'RATE_LIMITED, QUOTA_EXCEEDED (MAX_SESSIONS_PER_KEY) or CAPACITY_EXHAUSTED (MAX_SESSIONS; with `queue`, once its wait is over); see Retry-After'),
  },
});

export const listSessionsRoute = createRoute({
  method: 'get',
  path: '/sessions',
  summary: 'List sessions, newest first',
  request: { query: ListSessionsQuery },
  responses: { 200: json(SessionList, "A page of the caller's sessions (an admin's: everyone's)"), ...errors, 429: json(ErrorBody, 'RATE_LIMITED') },
});

export const sessionStatusRoute = createRoute({
  method: 'get',
  path: '/sessions/{id}/status',
  summary: 'Session status and health',
  request: { params: IdParam },
  responses: { 200: json(SessionStatusView, 'Status'), ...errors },
});

export const getSessionRoute = createRoute({
  method: 'get',
  path: '/sessions/{id}',
  summary: 'One session',
  request: { params: IdParam },
  responses: { 200: json(SessionView, 'The session'), ...errors },
});

export const deleteSessionRoute = createRoute({
  method: 'delete',
  path: '/sessions/{id}',
  summary: 'Stop a session (idempotent)',
  request: { params: IdParam },
  responses: { 200: json(SessionView, 'The session, now ended'), ...errors },
});

export const releaseSessionRoute = createRoute({
  method: 'post',
  path: '/sessions/{id}/release',
  summary: 'Release a session: it ends now if no client is connected, else when the last one disconnects',
  request: { params: IdParam },
  responses: {
    200: json(SessionView, 'The session: ended, or running until its last client disconnects'),
    ...errors,
    409: json(ErrorBody, 'SESSION_NOT_RUNNING: its agent does not hold it'),
  },
});

export const livezRoute = createRoute({
  method: 'get',
  path: '/livez',
  summary: 'Liveness: the process answers (no store or agent check, no key needed)',
  security: [],
  responses: { 200: json(z.object({ status: z.literal('ok') }), 'Alive') },
});

export const readyzRoute = createRoute({
  method: 'get',
  path: '/readyz',
  summary: 'Readiness: the session store answers and this replica is not shutting down (no key needed)',
  security: [],
  responses: {
    200: json(z.object({ status: z.literal('ok') }), 'Ready'),
    503: json(z.object({ status: z.enum(['degraded', 'draining']) }), 'The store does not answer, or this replica is shutting down'),
  },
});

export const healthRoute = createRoute({
  method: 'get',
  path: '/health',
  summary: 'Store and agent detail (needs a key)',
  responses: { 200: json(HealthView, 'Healthy'), 503: json(HealthView, 'Store unreachable') },
});
