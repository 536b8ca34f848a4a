/** chrome-remote-interface ships no types; the tests use it as a client with its own `/json/*` expectations. */
declare module 'chrome-remote-interface' {
  type Options = { host?: string; port?: number; alterPath?: (path: string) => string; target?: string };
  type Client = {
    Browser: { getVersion(): Promise<{ product: string }> };
    Runtime: { evaluate(params: { expression: string }): Promise<{ result: { value: unknown } }> };
    close(): Promise<void>;
  };
  type CdpFunction = ((options: Options) => Promise<Client>) & {
    Protocol(options: Options): Promise<{ domains: Array<{ domain: string }> }>;
    List(options: Options): Promise<Array<{ id: string; url: string; type: string; webSocketDebuggerUrl: string }>>;
  };
  const CDP: CdpFunction;
  export default CDP;
}
