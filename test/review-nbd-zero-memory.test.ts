// Review of 6485cd3 (TRIM/WRITE_ZEROES count 0 against the in-flight byte
// bound): they hold no buffer, but on a cold volume each queues one journal
// record per chunk it covers. With no cost only the 128-request bound was
// left, so one client with 128 whole-device zeroes of a 4 GiB cold volume
// in flight (half a million records) took the daemon from ~100 MB to
// ~1.8 GB resident; a few such clients exhaust memory. Measured peak growth:
// 1267 MiB before the fix, 408-463 MiB with it (most of that is the journal
// index keeping the half million records until destaged, not the NBD layer).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { run, type TestDaemon } from './helpers/daemon.js';
import { startNbdTestDaemon } from './helpers/nbd-client.js';
import { createVolume } from './helpers/cold.js';

const GiB = 1024 ** 3;
let daemon: TestDaemon | undefined;

after(async () => {
  await daemon?.cleanup();
});

function peakRssMiB(pid: number): number {
  return Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

test('128 whole-device WRITE_ZEROES pipelined on a 4 GiB cold volume: daemon memory stays bounded, all answered', async () => {
  daemon = await startNbdTestDaemon();
  await createVolume(daemon, 'big', 4 * GiB, 'cold');
  const before = peakRssMiB(daemon.info.pid);
  const out = run(
    'nbdsh',
    [
      '-c',
      `
import os, time
h.connect_uri(${JSON.stringify(daemon.exportUri('big'))})
size = h.get_size()
a = os.urandom(65536)
h.pwrite(a, size - 65536)
cookies = [h.aio_zero(size - 1, 0) for i in range(128)]
deadline = time.time() + 120
while h.aio_in_flight() > 0:
    if time.time() > deadline:
        raise Exception("zeroes not answered")
    h.poll(1000)
for c in cookies:
    h.aio_command_completed(c)
print(h.pread(65536, size - 65536) == bytes(65535) + a[-1:])
`,
    ],
    { timeoutMs: 180_000 },
  );
  assert.equal(out.trim(), 'True');
  const grew = peakRssMiB(daemon.info.pid) - before;
  assert.ok(grew < 800, `daemon peak RSS grew by ${Math.round(grew)} MiB for 128 zeroes in flight on one connection`);
});
