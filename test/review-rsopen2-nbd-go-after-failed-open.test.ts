// An NBD client's NBD_OPT_GO for a volume whose chunk map cannot be read
// (damaged at its end: an entry naming a pool the index does not have) waits
// for the sliced open (VolumeManager.prepareOpen, shared with the scrub's,
// the listing's and the stripe counts' tries since 1ca344d). When that open
// failed, the option was answered through borrowVolume, which opened the
// volume again in one go: the whole map read again, synchronously, only to
// fail the same way (~1.4 ms per 1,000 entries: seconds for 1M, every client
// of the daemon waiting, at each connect). The failure just recorded answers
// the client instead. Asserted: no read of the whole map in one call (the
// one-go open's) during the option, and the slowest event-loop gap below one
// synchronous read of the same map in this process (the gap alone is noisy
// under load: a loaded machine stalls a process ~100-250 ms now and then).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { ChunkState } from '../src/dataplane/meta/store.js';
import { NbdServer } from '../src/dataplane/nbd/server.js';
import { closedBigColdVolume, countWholeMapReads, oneGoReadMs, watchGaps } from './helpers/big-chunk-map.js';
import { OPT, REP, RawNbd, goData } from './helpers/nbd-client.js';

const CHUNKS = 150_000;

test(`NBD_OPT_GO on a closed volume of ${CHUNKS} chunk entries whose map cannot be read: refused with why, the map not read again in one go`, async (t) => {
  const { m, dir, id } = await closedBigColdVolume(t, false, CHUNKS);
  const good = m.meta.chunks.get([id, CHUNKS - 1])!;
  await m.meta.chunks.put([id, CHUNKS - 1], { ...good, state: ChunkState.Allocated, pool: 'gone-pool' });
  const nbd = new NbdServer({ manager: m });
  t.after(() => nbd.close());
  const socketPath = path.join(dir, 'nbd.sock');
  await nbd.listenUnix(socketPath);
  const oneGoMs = oneGoReadMs(m, id, CHUNKS);
  // Reads of the volume's map in one call (no limit: what a one-go open does); a sliced open reads ranges.
  const wholeMapReads = countWholeMapReads(t, m, id);

  for (const round of [1, 2]) {
    const c = await RawNbd.connect({ path: socketPath });
    t.after(() => c.close());
    await c.greeting();
    c.sendClientFlags(3);
    const wholeBefore = wholeMapReads.count;
    const gaps = watchGaps();
    c.sendOption(OPT.GO, goData('big'));
    const reply = await c.readOptionReply();
    const slowest = gaps.stop();
    assert.equal(wholeMapReads.count - wholeBefore, 0, `round ${round}: the map was read again in one go`);
    assert.equal(reply.type, REP.ERR_UNKNOWN, `round ${round}: refused as not available`);
    assert.equal(reply.data.toString('utf8'), 'export "big" is not available: pool gone-pool is not configured', `round ${round}: the open's failure, as before`);
    t.diagnostic(`round ${round}: slowest event-loop gap ${slowest.toFixed(1)} ms; one-go read ${oneGoMs.toFixed(1)} ms`);
    assert.ok(slowest < oneGoMs, `round ${round}: slowest event-loop gap ${slowest.toFixed(1)} ms, a one-go read of the map ${oneGoMs.toFixed(1)} ms`);
    assert.match(m.openFailure('big')?.error ?? '', /gone-pool/);
    assert.ok(!m.isOpen('big'));
    c.close();
  }
});
