import { describe, expect, it } from 'vitest';
import { ClusterJanitor } from '../../agent/runtime/kubernetes/janitor.js';
import type { RpcParams } from '../../shared/tunnel/protocol.js';
import { createLogger } from '../../shared/logger.js';
import { ManualClock } from '../helpers/clock.js';

const LOST_MS = 20_000;

/** Node Leases and Jobs as the apiserver would list them; the test moves renewals and time. */
function setup(opts: { leading?: boolean; jobListTakesMs?: number } = {}) {
  const clock = new ManualClock();
  const renewTimes: Record<string, string> = { 'node-1': 'r0', 'node-2': 'r0' };
  // s2's Job was a warm one its session claimed: it keeps its own name. The warm Jobs are no session's.
  const jobs: Array<{ id?: string; node: string; name: string; warm?: boolean }> = [
    { id: 's1', node: 'node-1', name: 'bso-s1' },
    { id: 's2', node: 'node-2', name: 'bso-warm-claimed' },
    { id: 's3', node: 'node-unseen', name: 'bso-s3' },
    { node: 'node-1', name: 'bso-warm-1', warm: true },
    { node: 'node-2', name: 'bso-warm-2', warm: true },
  ];
  const syncs: Array<RpcParams<'cluster.sync'>> = [];
  const deleted: string[] = [];
  const janitor = new ClusterJanitor({
    batch: {
      listNamespacedJob: async () => {
        // An overloaded apiserver: the list answers this much later (within its call deadline).
        if (opts.jobListTakesMs) clock.advance(opts.jobListTakesMs);
        return {
          items: jobs.map((j) => ({
            metadata: { name: j.name, labels: { 'bso.dev/node': j.node, ...(j.id ? { 'bso.dev/session-id': j.id } : {}), ...(j.warm ? { 'bso.dev/warm': j.name } : {}) } },
          })),
        };
      },
      deleteNamespacedJob: async ({ name }: { name: string }) => void deleted.push(name),
    } as never,
    coordination: {
      listNamespacedLease: async () => ({ items: Object.entries(renewTimes).map(([name, renewTime]) => ({ metadata: { name }, spec: { renewTime } })) }),
    } as never,
    namespace: 'bso-sessions',
    cluster: 'c1',
    nodeLostAfterMs: LOST_MS,
    leading: () => opts.leading ?? true,
    sync: async (params) => {
      syncs.push(params);
      return { delete: params.lostNodes.length ? ['s2'] : [] };
    },
    clock,
    logger: createLogger({ level: 'silent' }),
  });
  return { clock, renewTimes, janitor, syncs, deleted };
}

describe('the cluster janitor', () => {
  it("a node whose Lease stops changing is lost after the threshold, as this process observed it; its sessions' Jobs (by their own names) and warm Jobs go; a renewing node's do not", async () => {
    const { clock, renewTimes, janitor, syncs, deleted } = setup();
    for (let t = 0; t <= 30_000; t += 2000) {
      if (t % 10_000 === 0) renewTimes['node-1'] = `r${t}`; // node-1 renews every 10 s; node-2 stopped
      await janitor.pass();
      clock.advance(2000);
    }
    const lostPerPass = syncs.map((s) => s.lostNodes);
    // Not before 20 s of node-2's Lease standing still, then at every pass; node-1 and a node never seen, never.
    expect(lostPerPass.slice(0, 11).every((l) => l.length === 0)).toBe(true);
    expect(lostPerPass.slice(11)).toEqual(Array(lostPerPass.length - 11).fill(['node-2']));
    expect(syncs[0]!.jobs).toEqual([
      { id: 's1', node: 'node-1' },
      { id: 's2', node: 'node-2' },
      { id: 's3', node: 'node-unseen' },
    ]);
    expect(new Set(deleted)).toEqual(new Set(['bso-warm-claimed', 'bso-warm-2']));
  });

  it('time a slow pass spends after reading the Leases does not count against the nodes', async () => {
    const { clock, janitor, syncs } = setup({ jobListTakesMs: 9000 });
    await janitor.pass(); // t=0: Leases seen; the Job list then takes 9 s
    clock.advance(LOST_MS - 9000 - 1000); // t=19 s: read again (nothing renewed for 19 s), list until 28 s
    await janitor.pass();
    expect(syncs.map((s) => s.lostNodes)).toEqual([[], []]);
    clock.advance(2000); // t=30 s: 30 s without a renewal as of this read
    await janitor.pass();
    expect(syncs.at(-1)!.lostNodes.sort()).toEqual(['node-1', 'node-2']);
  });

  it('an agent that does not lead only watches the Leases', async () => {
    const { janitor, syncs } = setup({ leading: false });
    await janitor.pass();
    expect(syncs).toEqual([]);
  });
});
