// NBD input framing and the idle fast path: requests split across socket
// reads at any byte, many requests coalesced into one read, and synchronous
// (idle) requests interleaved with async ones on other connections all give
// back exactly the bytes written, over TCP and the Unix socket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import type { TestDaemon } from './helpers/daemon.js';
import { CMD, FLAG, RawNbd, nextTurn, startNbdTestDaemon } from './helpers/nbd-client.js';

const MiB = 1024 * 1024;

let daemon: TestDaemon;

before(async () => {
  daemon = await startNbdTestDaemon();
});

after(async () => {
  await daemon?.cleanup();
});

for (const transport of ['tcp', 'unix'] as const) {
  const connect = (): Promise<RawNbd> => RawNbd.connect(transport === 'tcp' ? { port: daemon.info.nbd.port } : { path: daemon.info.nbd.socketPath });

  test(`${transport}: a WRITE whose header and payload arrive in odd pieces lands byte-exact`, async () => {
    const c = await connect();
    await c.handshake('vol', { structured: true });
    const offset = 3 * MiB + 512; // unaligned on purpose
    const data = crypto.randomBytes(MiB + 4096);
    const wire = Buffer.concat([RawNbd.requestHeader(CMD.WRITE, 0, 0xabcdn, offset, data.length), data]);
    // Cut inside the header, at its end, inside the payload, and leave a 1-byte tail.
    const cuts = [0, 7, 28, 29, 1000, 300_000, 700_000, wire.length - 1, wire.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      c.write(wire.subarray(cuts[i], cuts[i + 1]));
      await nextTurn();
    }
    // The hand-built request used cookie 0xabcd; its reply is a 16-byte simple reply.
    const reply = await c.read(16);
    assert.equal(reply.readUInt32BE(0), 0x67446698);
    assert.equal(reply.readUInt32BE(4), 0, 'write failed');
    assert.equal(reply.readBigUInt64BE(8), 0xabcdn);
    const back = await c.readAt(offset, data.length);
    assert.equal(back.error, 0);
    assert.ok(back.data.equals(data), 'bytes read back differ from the split write');
    c.close();
  });

  test(`${transport}: 64 pipelined 4 KiB writes in one socket write, then reads, all byte-exact`, async () => {
    const c = await connect();
    await c.handshake('vol', { structured: false });
    const blocks = Array.from({ length: 64 }, () => crypto.randomBytes(4096));
    const base = 10 * MiB + (transport === 'tcp' ? 0 : MiB);
    c.socket.cork();
    const writes = blocks.map((b, i) => c.writeAt(base + i * 8192, b));
    c.socket.uncork();
    for (const w of await Promise.all(writes)) assert.equal(w.error, 0);
    c.socket.cork();
    const reads = blocks.map((_, i) => c.readAt(base + i * 8192, 4096));
    c.socket.uncork();
    const got = await Promise.all(reads);
    got.forEach((r, i) => {
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(blocks[i]!), `block ${i} differs`);
    });
    // The gaps between the blocks were never written: still zeros.
    const gap = await c.readAt(base + 4096, 4096);
    assert.ok(gap.data.equals(Buffer.alloc(4096)));
    c.close();
  });
}

test('idle (synchronous) requests on one connection and a busy queue on another never mix up bytes', async () => {
  const idle = await RawNbd.connect({ path: daemon.info.nbd.socketPath });
  const busy = await RawNbd.connect({ port: daemon.info.nbd.port });
  await idle.handshake('vol', { structured: true });
  await busy.handshake('vol', { structured: true });
  const region = 20 * MiB;
  const expected = new Map<number, Buffer>();
  const busyWork = (async () => {
    for (let round = 0; round < 8; round++) {
      const batch: Promise<unknown>[] = [];
      for (let i = 0; i < 32; i++) {
        const off = region + (round * 32 + i) * 4096;
        const b = crypto.randomBytes(4096);
        expected.set(off, b);
        batch.push(busy.writeAt(off, b).then((r) => assert.equal(r.error, 0)));
      }
      await Promise.all(batch);
    }
  })();
  // QD1 on the other connection, alternating write and read-back; with FUA every 8th.
  for (let i = 0; i < 64; i++) {
    const off = region + 8 * MiB + i * 65536;
    const b = crypto.randomBytes(i % 2 === 0 ? 65536 : 4096);
    assert.equal((await idle.writeAt(off, b, i % 8 === 0 ? FLAG.FUA : 0)).error, 0);
    const r = await idle.readAt(off, b.length);
    assert.equal(r.error, 0);
    assert.ok(r.data.equals(b), `idle block ${i} differs`);
  }
  await busyWork;
  assert.equal((await idle.flush()).error, 0);
  for (const [off, b] of expected) {
    const r = await idle.readAt(off, 4096);
    assert.ok(r.data.equals(b), `busy block at ${off} differs`);
  }
  idle.close();
  busy.close();
});
