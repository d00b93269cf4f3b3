// native/fs_seek.c's tcpBytesAcked(fd) (getsockopt TCP_INFO tcpi_bytes_acked),
// the S3 send idle check's measure of client progress: it grows by what the
// peer read and acknowledged, and refuses descriptors that are not TCP sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { createRequire } from 'node:module';
import { nativeAddonPath } from '../src/native-addon.js';

const found = nativeAddonPath('fs_seek');
assert.ok(found !== null, 'native/build/Release/fs_seek.node is built (npm install)');
const { tcpBytesAcked } = createRequire(import.meta.url)(found) as { tcpBytesAcked: (fd: number) => number };
const MiB = 1024 * 1024;

function fdOf(socket: net.Socket): number {
  const fd = (socket as net.Socket & { _handle?: { fd?: number } })._handle?.fd;
  assert.ok(typeof fd === 'number' && fd >= 0, 'a TCP socket handle has a descriptor on Linux');
  return fd;
}

test('tcpBytesAcked grows by the bytes the peer read', async (t) => {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await once(client, 'connect');
  const [peer] = await accepted;
  t.after(() => { client.destroy(); peer.destroy(); });

  const fd = fdOf(peer);
  const before = tcpBytesAcked(fd);
  assert.ok(before >= 0 && before <= 1, `a fresh connection has acknowledged at most the handshake (got ${before})`);

  let received = 0;
  const all = new Promise<void>((resolve) => client.on('data', (b: Buffer) => { received += b.length; if (received === 4 * MiB) resolve(); }));
  peer.write(Buffer.alloc(4 * MiB, 7));
  await all;
  // The last ACK can trail the client's read by a round trip: wait for it on the writer's side.
  while (tcpBytesAcked(fd) - before < 4 * MiB) await new Promise((r) => setImmediate(r));
  assert.equal(tcpBytesAcked(fd) - before, 4 * MiB);
});

test('tcpBytesAcked refuses what is not a TCP socket', () => {
  const fd = fs.openSync('/dev/null', 'r');
  try {
    assert.throws(() => tcpBytesAcked(fd), (e: NodeJS.ErrnoException) => e.code === 'ENOTSOCK');
  } finally {
    fs.closeSync(fd);
  }
  assert.throws(() => tcpBytesAcked(fd), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
  assert.throws(() => tcpBytesAcked(-1), RangeError);
});
