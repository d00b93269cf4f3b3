// A CACHE of a few GiB runs for seconds (it reads its whole range), and it
// must not hold the connection or a disconnect meanwhile. Each CACHE counted
// 32 MiB against the connection's 128 MiB of requests in flight for as long
// as it ran, and the connection reads no request while over it (until under
// 64 MiB): two long CACHEs and two 32 MiB READs stalled every later request
// of the connection until a CACHE ended (seconds, minutes for cold data).
// Now a CACHE reads and counts 1 MiB at a time. And after NBD_CMD_DISC (or
// a daemon stop) a CACHE in flight read on to its end before the connection
// closed (a daemon stop waited out its 10 s grace, then dropped the
// connection; libnbd closes its socket after a DISC, which already ended a
// CACHE at its next step). CACHE is advisory: it now ends at its next step
// once the connection is disconnecting, answered with success.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon, nbdsh } from './helpers/daemon.js';

const GiB = 1024 ** 3;

test('long CACHEs leave the connection serving, and end at a disconnect and at a daemon stop', async (t) => {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  d.createVolume('v', '8G', '--tier', 'hot');
  const out = nbdsh(`
import nbd, sys
h = nbd.NBD()
h.connect_uri(${JSON.stringify(d.unixUri('v'))})
# Every 1 MiB chunk of the first 2 GiB written (4 KiB each): a CACHE over it
# reads 2 GiB (a sparse file's pages, a second or so).
for i in range(2048):
    h.aio_pwrite(b'\\x11' * 4096, i << 20)
    if h.aio_in_flight() >= 64: h.poll(-1)
while h.aio_in_flight() > 0: h.poll(-1)
h.flush()
def rchar():
    return int([l for l in open('/proc/${d.info.pid}/io') if l.startswith('rchar:')][0].split()[1])
r0 = rchar()
events = []
def ended(what):
    return lambda err: events.append((what, err)) or 1
for i in range(2):
    h.aio_cache(2 << 30, 0, completion=ended('cache'))
bufs = [nbd.Buffer(32 << 20), nbd.Buffer(32 << 20), nbd.Buffer(4096)]
for b in bufs[:2]:
    h.aio_pread(b, 5 << 30, completion=ended('read 32M'))
h.aio_pread(bufs[2], 6 << 30, completion=ended('read 4K'))
while not any(w == 'read 4K' for w, _ in events): h.poll(-1)
print(events)
h.shutdown()
print(events)
print(rchar() - r0)

# A daemon stop (SIGTERM) with two CACHEs in flight on a client that reads
# on: their replies come at their next step, and the daemon reads no further.
import os, signal
h = nbd.NBD()
h.connect_uri(${JSON.stringify(d.unixUri('v'))})
events = []
for i in range(2):
    h.aio_cache(2 << 30, 0, completion=ended('cache'))
h.aio_pread(bufs[2], 6 << 30, completion=ended('read 4K'))
while not any(w == 'read 4K' for w, _ in events): h.poll(-1)
r1 = rchar()
rmax = r1
os.kill(${d.info.pid}, signal.SIGTERM)
while sum(1 for w, _ in events if w == 'cache') < 2 and not h.aio_is_closed():
    h.poll(10)
    try: rmax = max(rmax, rchar())
    except OSError: pass
print(events)
print(rmax - r1)
`);
  const lines = out.trim().split('\n');
  const atDisc = lines[0]!;
  const atEnd = lines[1]!;
  const readAfter = Number(lines[2]);
  const atStop = lines[3]!;
  const readAfterStop = Number(lines[4]);
  t.diagnostic(`at the stop: ${atStop}; the daemon read ${(readAfterStop / GiB).toFixed(2)} GiB after the SIGTERM`);
  // Answered (with success: the client reads on) ...
  assert.equal((atStop.match(/\('cache', c_int\(0\)\)/g) ?? []).length, 2, atStop);
  // ...at their next 1 MiB step, not at the end of their 2 x 2 GiB.
  assert.ok(readAfterStop < 512 * 1024 * 1024, `the daemon read ${readAfterStop} bytes after the SIGTERM`);
  t.diagnostic(`${atEnd}; the daemon read ${(readAfter / GiB).toFixed(2)} GiB from the CACHEs' start to the close`);
  // The 4 KiB READ sent after the CACHEs was answered while both still ran.
  assert.ok(!atDisc.includes("'cache'"), `a CACHE ended before the READ behind it was answered: ${atDisc}`);
  // Both ended at the disconnect (success, or ENOTCONN/ESHUTDOWN where
  // libnbd stops reading replies once its NBD_CMD_DISC is out, as against
  // nbdkit, which aborts requests in flight at a DISC)...
  assert.equal((atEnd.match(/\('cache', /g) ?? []).length, 2, atEnd);
  // ...without the daemon reading their ranges to the end (2 x 2 GiB) first.
  assert.ok(readAfter < 2 * GiB, `the daemon read ${readAfter} bytes between the CACHEs' start and the close`);
});
