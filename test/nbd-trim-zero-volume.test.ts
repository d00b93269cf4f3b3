// TRIM and WRITE_ZEROES carry no payload, so however much of the export
// they cover they must not count against the per-connection bound on bytes
// held in flight. They did (and were never subtracted): once a connection
// had trimmed or zeroed 128 MiB in total (one mkfs discard of the device,
// fstrim, qemu-img convert's pre-zeroing), the server stopped reading it
// for good: the client hung, and after it gave up the socket sat in
// CLOSE-WAIT, never closed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { TestDaemon } from './helpers/daemon.js';
import { run } from './helpers/daemon.js';
import { startNbdTestDaemon } from './helpers/nbd-client.js';

let daemon: TestDaemon;

before(async () => {
  daemon = await startNbdTestDaemon();
  daemon.createVolume('big', '1G');
});

after(async () => {
  await daemon?.cleanup();
});

test('nbdsh: whole-device TRIM and WRITE_ZEROES, then 400 x 1 MiB zeroes on one connection: every later request is answered', () => {
  const out = run(
    'nbdsh',
    [
      '-c',
      `
import os
h.connect_uri(${JSON.stringify(daemon.exportUri('big'))})
size = h.get_size()
MiB = 1024 * 1024
a = os.urandom(MiB)
h.pwrite(a, 100 * MiB)
h.trim(size, 0)
h.zero(size, 0)
print(h.pread(MiB, 100 * MiB) == bytes(MiB))
for i in range(400):
    h.zero(MiB, i * MiB)
b = os.urandom(MiB)
h.pwrite(b, 500 * MiB)
h.flush()
print(h.pread(MiB, 500 * MiB) == b)
`,
    ],
    { timeoutMs: 60_000 },
  );
  assert.deepEqual(out.trim().split('\n'), ['True', 'True']);
});
