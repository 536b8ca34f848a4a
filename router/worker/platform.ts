/**
 * The few Workers runtime APIs the edge router uses, declared here so the project's one tsconfig
 * (with Node and DOM types) can check this code without pulling in the global Workers types.
 */
export interface DurableObjectId {
  toString(): string;
}
export interface DurableObjectStub {
  fetch(input: Request | string, init?: RequestInit): Promise<Response>;
}
export interface DurableObjectNamespace {
  idFromName(name: string): DurableObjectId;
  get(id: DurableObjectId): DurableObjectStub;
}
export interface DurableObjectStorage {
  get<T>(key: string): Promise<T | undefined>;
  put<T>(key: string, value: T): Promise<void>;
  delete(key: string): Promise<boolean>;
  list<T>(opts?: { prefix?: string }): Promise<Map<string, T>>;
  setAlarm(at: number): Promise<void>;
  getAlarm(): Promise<number | null>;
}
export interface WorkerWebSocket {
  accept(): void;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  serializeAttachment(value: unknown): void;
  deserializeAttachment(): unknown;
  addEventListener(type: 'message', cb: (ev: { data: string | ArrayBuffer }) => void): void;
  addEventListener(type: 'close', cb: (ev: { code: number; reason: string }) => void): void;
  addEventListener(type: 'error', cb: (ev: unknown) => void): void;
  readyState: number;
}
export interface DurableObjectState {
  storage: DurableObjectStorage;
  acceptWebSocket(ws: WorkerWebSocket, tags?: string[]): void;
  getWebSockets(tag?: string): WorkerWebSocket[];
  setWebSocketAutoResponse(pair: unknown): void;
  getWebSocketAutoResponseTimestamp(ws: WorkerWebSocket): Date | null;
  blockConcurrencyWhile<T>(fn: () => Promise<T>): Promise<T>;
}
export interface ExecutionContext {
  waitUntil(p: Promise<unknown>): void;
}

declare const WebSocketPair: { new (): { 0: WorkerWebSocket; 1: WorkerWebSocket } };
declare const WebSocketRequestResponsePair: { new (request: string, response: string): unknown };

/** A connected pair: the first goes back to the client in the 101 response, the second stays here. */
export function newWebSocketPair(): [WorkerWebSocket, WorkerWebSocket] {
  const pair = new WebSocketPair();
  return [pair[0], pair[1]];
}

export function autoResponse(request: string, response: string): unknown {
  return new WebSocketRequestResponsePair(request, response);
}

/** Workers' Response accepts a `webSocket` for 101 answers; the DOM type does not know it. */
export function upgradeResponse(client: WorkerWebSocket, headers?: HeadersInit): Response {
  return new Response(null, { status: 101, webSocket: client, headers } as ResponseInit);
}

export const asBytes = (data: string | ArrayBuffer): Uint8Array | string => (typeof data === 'string' ? data : new Uint8Array(data));
