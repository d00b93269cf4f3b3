// Review of 3b17344 (NBD shutdown drains requests in flight): a connection
// with nothing in flight has nothing to drain, so a daemon stop must not
// wait on it. It did: shutdown() half-closed the socket and waited for the
// client to close its end, which a libnbd handle that is not being used
// (nbdsh waiting on its user, an idle nbdcopy/qemu-img process between
// calls) never does: libnbd reads the socket only inside a call. Every
// SIGTERM with such a client connected then took the full 10 s grace period
// (a supervisor's stop timeout, every test's teardown).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { CLIENT_ENV, type TestDaemon } from './helpers/daemon.js';
import { startNbdTestDaemon } from './helpers/nbd-client.js';

let daemon: TestDaemon | undefined;
let client: ChildProcess | undefined;

after(async () => {
  client?.kill('SIGKILL');
  await daemon?.cleanup();
});

test('SIGTERM with an idle nbdsh connection: the daemon stops at once, the handle sees the disconnect on its next call', async () => {
  daemon = await startNbdTestDaemon();
  // Connects, writes and flushes, then leaves the handle alone until told to go on (a line on stdin).
  client = spawn(
    'nbdsh',
    [
      '-c',
      `
import sys
h.connect_uri(${JSON.stringify(daemon.exportUri('vol'))})
h.pwrite(b'x' * 4096, 0)
h.flush()
print('connected', flush=True)
sys.stdin.readline()
try:
    h.pread(4096, 0)
    print('still served', flush=True)
except nbd.Error as e:
    print('disconnected', flush=True)
`,
    ],
    { env: CLIENT_ENV, stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const lines = readline.createInterface({ input: client.stdout! })[Symbol.asyncIterator]();
  assert.equal((await lines.next()).value, 'connected');
  const t0 = Date.now();
  assert.equal(await daemon.stop(), 0);
  const ms = Date.now() - t0;
  assert.ok(ms < 5000, `daemon stop with an idle NBD client took ${ms} ms (waited out the grace period)`);
  client.stdin!.write('\n');
  assert.equal((await lines.next()).value, 'disconnected');
});
