// Daemon shutdown with NBD clients connected: requests the server has begun
// are answered before it disconnects (proto.md "Terminating the
// transmission phase": the server SHOULD wait for inflight requests to be
// serviced before initiating a hard disconnect). A client otherwise cannot
// tell whether a FLUSH or FUA write it was waiting on took effect.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import type { TestDaemon } from './helpers/daemon.js';
import { RawNbd, startNbdTestDaemon } from './helpers/nbd-client.js';

const MiB = 1024 * 1024;
let daemon: TestDaemon | undefined;

after(async () => {
  await daemon?.cleanup();
});

test('SIGTERM while a FLUSH is in flight: the FLUSH is answered (success), then the connection closes', async () => {
  daemon = await startNbdTestDaemon();
  const c = await RawNbd.connect({ port: daemon.info.nbd.port });
  await c.handshake('vol', { structured: true });
  // Dirty page cache so the FLUSH's fdatasync takes a while.
  const data = crypto.randomBytes(4 * MiB);
  for (let off = 0; off < 48 * MiB; off += data.length) assert.equal((await c.writeAt(off, data)).error, 0);
  const flush = c.flush();
  // The READ's reply proves the FLUSH before it in the stream was read and started.
  assert.equal((await c.readAt(0, 4096)).error, 0);
  const stopped = daemon.stop();
  const r = await flush.then(
    (x) => `error ${x.error}`,
    (err: Error) => err.name,
  );
  assert.equal(r, 'error 0', 'the in-flight FLUSH got no reply before the disconnect');
  await c.closed;
  assert.equal(await stopped, 0);
});
