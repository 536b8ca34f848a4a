/**
 * Runs a process entry point when its module is the one Node was started with: start, stop cleanly
 * on SIGINT/SIGTERM, and exit non-zero with the message (not a stack) when start-up fails.
 */
export function runIfMain(moduleUrl: string, start: () => Promise<{ close(): Promise<void> }>): void {
  if (moduleUrl !== `file://${process.argv[1]}`) return;
  start().then(
    (running) => {
      const stop = () => void running.close().then(() => process.exit(0));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    },
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
