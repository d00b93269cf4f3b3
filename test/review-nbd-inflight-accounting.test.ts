// Review of 6485cd3 (in-flight byte bound counts only buffers held): every
// path a request can take must give back exactly what it took, or the
// connection's bound fills up over time and the server stops reading it
// for good (what TRIM/WRITE_ZEROES did before 6485cd3). One connection
// drives each path many times past both bounds (128 requests, 128 MiB in
// flight), pipelined with libnbd's aio calls, and must still answer at the
// end: large and small READs, WRITEs, CACHE, whole-device TRIM and
// WRITE_ZEROES, BLOCK_STATUS, FLUSH, requests refused before they start
// (beyond the end, zero length, a WRITE payload over the maximum) and
// requests that fail after they start (a FAST_ZERO refused).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { run, type TestDaemon } from './helpers/daemon.js';
import { startNbdTestDaemon } from './helpers/nbd-client.js';

let daemon: TestDaemon | undefined;

after(async () => {
  await daemon?.cleanup();
});

test('nbdsh aio: every request path, many times past the in-flight bounds on one connection, then the connection still answers', async () => {
  daemon = await startNbdTestDaemon();
  const out = run(
    'nbdsh',
    [
      '-c',
      `
import os, time
h.set_strict_mode(0)  # let libnbd send what the server must refuse
h.add_meta_context("base:allocation")
h.connect_uri(${JSON.stringify(daemon.exportUri('vol'))})
size = h.get_size()
MiB = 1024 * 1024
N = 256          # > 128 requests in flight
ROUNDS = 3
def batch(name, issue):
    cookies = [issue(i) for i in range(N)]
    deadline = time.time() + 60
    while h.aio_in_flight() > 0:
        if time.time() > deadline:
            raise Exception("%s: %d requests never answered" % (name, h.aio_in_flight()))
        h.poll(1000)
    errors = 0
    for c in cookies:
        try:
            h.aio_command_completed(c)
        except nbd.Error:
            errors += 1
    print(name, errors)
data = os.urandom(MiB)
# One buffer per size, shared by every READ in flight (their contents are not looked at).
r4m, r4k, r0, r48m = nbd.Buffer(4 * MiB), nbd.Buffer(4096), nbd.Buffer(0), nbd.Buffer(48 * MiB)
for r in range(ROUNDS):
    batch("write", lambda i: h.aio_pwrite(data, (i % 64) * MiB))
    batch("read4m", lambda i: h.aio_pread(r4m, (i % 16) * 4 * MiB))
    batch("read4k", lambda i: h.aio_pread(r4k, (i % 64) * MiB))
    batch("cache", lambda i: h.aio_cache(4 * MiB, (i % 16) * 4 * MiB))
    batch("block_status", lambda i: h.aio_block_status(size, 0, lambda *a: 0))
    batch("flush", lambda i: h.aio_flush())
    batch("zero_whole", lambda i: h.aio_zero(size, 0))
    batch("write", lambda i: h.aio_pwrite(data, (i % 64) * MiB))
    batch("fast_zero_refused", lambda i: h.aio_zero(4096, (i % 64) * MiB + 512, flags=nbd.CMD_FLAG_FAST_ZERO))
    batch("trim_whole", lambda i: h.aio_trim(size, 0))
    batch("read_past_end", lambda i: h.aio_pread(r4m, size))
    batch("write_past_end", lambda i: h.aio_pwrite(data, size))
    batch("read_zero_length", lambda i: h.aio_pread(r0, 0))
    batch("read_too_big", lambda i: h.aio_pread(r48m, 0))
b = os.urandom(MiB)
h.pwrite(b, 7 * MiB)
h.flush()
print("final", h.pread(MiB, 7 * MiB) == b)
`,
    ],
    { timeoutMs: 240_000 },
  );
  const lines = out.trim().split('\n');
  const errs = new Map<string, Set<string>>();
  for (const l of lines.slice(0, -1)) {
    const [name, n] = l.split(' ');
    if (!errs.has(name!)) errs.set(name!, new Set());
    errs.get(name!)!.add(n!);
  }
  // Paths that succeed, and paths that fail every time (each request answered with an error).
  for (const ok of ['write', 'read4m', 'read4k', 'cache', 'block_status', 'flush', 'zero_whole', 'trim_whole']) assert.deepEqual([...errs.get(ok)!], ['0'], ok);
  for (const bad of ['fast_zero_refused', 'read_past_end', 'write_past_end', 'read_zero_length', 'read_too_big']) assert.deepEqual([...errs.get(bad)!], ['256'], bad);
  assert.equal(lines.at(-1), 'final True');
});
