// The option-phase deadline counts from the client's last option, not from
// connect. `nbdinfo --list` haggles on one connection (NBD_OPT_INFO and
// NBD_OPT_LIST_META_CONTEXT per export); over TCP libnbd's small writes wait
// out the delayed ACK, ~200 ms per export, so with the deadline counted from
// connect the listing of more than ~140 volumes was cut at 30 s ("server
// disconnected unexpectedly", exit 1). A client that sends nothing is still
// dropped after the deadline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { CLIENT_ENV } from './helpers/daemon.js';
import { RawNbd, startNbdTestDaemon } from './helpers/nbd-client.js';

/** The daemon's option-phase deadline (connection.ts HANDSHAKE_TIMEOUT_MS). */
const HANDSHAKE_TIMEOUT_MS = 30_000;

test('a client haggling for longer than the handshake deadline (an option every second) is served; an idle one is dropped', { timeout: 120_000 }, async (t) => {
  const d = await startNbdTestDaemon();
  t.after(() => d.cleanup());

  // Idle: greeting read, client flags sent, then no option.
  const idle = await RawNbd.connect({ port: d.info.nbd.port });
  t.after(() => idle.close());
  await idle.greeting();
  idle.sendClientFlags(3);
  const idleSince = Date.now();
  let idleClosedAt = 0;
  void idle.closed.then(() => (idleClosedAt = Date.now()));

  // nbdsh over TCP: an option a second until the deadline is well past, then GO and a read.
  const script = `
import time
h.set_opt_mode(True)
h.connect_uri(${JSON.stringify(d.uri)})
h.set_export_name("vol")
t0 = time.monotonic()
n = 0
while time.monotonic() - t0 < ${(HANDSHAKE_TIMEOUT_MS + 5_000) / 1000}:
    h.opt_info()
    h.opt_list_meta_context(lambda ctx: 0)
    n += 1
    time.sleep(1)
h.opt_go()
print(n, h.get_size(), len(h.pread(4096, 0)))
`;
  const sh = spawn('nbdsh', ['-c', script], { env: CLIENT_ENV });
  let out = '';
  let err = '';
  sh.stdout.on('data', (b: Buffer) => (out += b.toString()));
  sh.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const code = await new Promise<number | null>((r) => sh.once('exit', r));
  assert.equal(code, 0, `nbdsh: ${err}\ndaemon:\n${d.stderr}`);
  const [rounds, size, read] = out.trim().split(' ').map(Number);
  assert.ok(rounds! >= 20, out);
  assert.equal(size, 64 * 1024 * 1024);
  assert.equal(read, 4096);

  // The idle client was dropped by then (at the deadline, not earlier).
  await idle.closed;
  assert.ok(idleClosedAt - idleSince >= HANDSHAKE_TIMEOUT_MS - 1_000, `idle client dropped after ${idleClosedAt - idleSince} ms`);
  assert.match(d.stderr, /nbd: closing connection reason=handshake timed out/);
});
