import type { SessionStore } from './types.js';

export type StoreObserver = (operation: string, seconds: number, ok: boolean) => void;

/** The same store, every call timed (for the router's store-latency histogram). */
export function timedStore(store: SessionStore, observe: StoreObserver): SessionStore {
  const timed =
    <A extends unknown[], R>(operation: string, call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const started = performance.now();
      try {
        const result = await call(...args);
        observe(operation, (performance.now() - started) / 1000, true);
        return result;
      } catch (err) {
        observe(operation, (performance.now() - started) / 1000, false);
        throw err;
      }
    };
  return {
    create: timed('create', (s, limits) => store.create(s, limits)),
    get: timed('get', (id) => store.get(id)),
    transition: timed('transition', (id, change, now) => store.transition(id, change, now)),
    list: timed('list', (q) => store.list(q)),
    listActive: timed('listActive', () => store.listActive()),
    activeCount: timed('activeCount', () => store.activeCount()),
    fleetCounts: timed('fleetCounts', () => store.fleetCounts()),
    queueTicket: timed('queueTicket', (ticket, owner, now, ttlSec) => store.queueTicket(ticket, owner, now, ttlSec)),
    leaveQueue: timed('leaveQueue', (ticket) => store.leaveQueue(ticket)),
    ping: timed('ping', () => store.ping()),
    close: () => store.close(),
  };
}
