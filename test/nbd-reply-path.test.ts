// NBD reply path: a lone reply to a socket read is written to the socket fd
// directly, falling back to the stream when the socket buffer is full, and
// after a large WRITE the next read takes just a request header. These tests
// check that replies stay byte-exact and in cookie order through both, over
// TCP and the Unix socket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import type { TestDaemon } from './helpers/daemon.js';
import { RawNbd, nextTurn, startNbdTestDaemon } from './helpers/nbd-client.js';

const MiB = 1024 * 1024;

let daemon: TestDaemon;

before(async () => {
  daemon = await startNbdTestDaemon();
});

after(async () => {
  await daemon?.cleanup();
});

/** READs the daemon has served on `vol`, from its Prometheus endpoint. */
async function servedReads(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${daemon.info.metrics.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('couchestor_volume_read_ops_total') && l.includes('"vol"'));
  assert.ok(line, 'no read counter for vol in /metrics');
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

for (const transport of ['tcp', 'unix'] as const) {
  const connect = (): Promise<RawNbd> => RawNbd.connect(transport === 'tcp' ? { port: daemon.info.nbd.port } : { path: daemon.info.nbd.socketPath });

  test(`${transport}: 64 KiB READs sent one by one to a client that is not reading come back whole and in order`, { timeout: 60_000 }, async () => {
    const c = await connect();
    await c.handshake('vol', { structured: true });
    const base = (transport === 'tcp' ? 0 : 16) * MiB;
    const region = crypto.randomBytes(8 * MiB);
    for (let off = 0; off < region.length; off += MiB) {
      assert.equal((await c.writeAt(base + off, region.subarray(off, off + MiB))).error, 0);
    }
    // 128 x 64 KiB = 8 MiB of replies, more than both socket buffers hold:
    // the server's direct writes come up short or hit EAGAIN and the rest
    // must queue behind them in the stream, in order.
    c.socket.pause();
    const reads: Promise<{ error: number; data: Buffer }>[] = [];
    // Over the Unix socket (212 KiB send buffer) each READ is sent only once
    // the daemon has served the one before, so each is a lone reply to its
    // own socket read: after ~4 the direct write gets EAGAIN and the reply
    // must go to the stream instead (a reply lost there hangs this test into
    // its timeout).
    const oneByOne = transport === 'unix';
    let served = oneByOne ? await servedReads() : 0;
    for (let i = 0; i < (oneByOne ? 16 : 128); i++) {
      reads.push(c.readAt(base + i * 65536, 65536));
      if (!oneByOne) {
        await nextTurn();
        continue;
      }
      for (let polls = 0; (await servedReads()) === served; polls++) assert.ok(polls < 1000, `read ${i} never served`);
      served++;
    }
    c.socket.resume();
    const got = await Promise.all(reads);
    got.forEach((r, i) => {
      assert.equal(r.error, 0, `read ${i} failed`);
      assert.ok(r.data.equals(region.subarray(i * 65536, (i + 1) * 65536)), `read ${i} differs`);
    });
    c.close();
  });

  test(`${transport}: large and small WRITEs alternating (header-only reads after each large one) land byte-exact`, async () => {
    const c = await connect();
    await c.handshake('vol', { structured: false });
    const base = (transport === 'tcp' ? 32 : 48) * MiB;
    const sizes = [MiB, 4096, MiB, 65536, 512, MiB, 3 * 65536 + 100, 4096];
    const blocks = sizes.map((n) => crypto.randomBytes(n));
    const offsets: number[] = [];
    let at = base;
    for (const b of blocks) {
      offsets.push(at);
      at += Math.ceil((b.length + 1) / 4096) * 4096;
    }
    // Pipelined in one go (large payloads split across many reads) ...
    const writes = blocks.map((b, i) => c.writeAt(offsets[i]!, b));
    for (const w of await Promise.all(writes)) assert.equal(w.error, 0);
    // ... and at QD1.
    for (let i = 0; i < blocks.length; i++) {
      const b = crypto.randomBytes(blocks[i]!.length);
      blocks[i] = b;
      assert.equal((await c.writeAt(offsets[i]!, b)).error, 0);
    }
    for (let i = 0; i < blocks.length; i++) {
      const r = await c.readAt(offsets[i]!, blocks[i]!.length);
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(blocks[i]!), `block ${i} (${blocks[i]!.length} bytes) differs`);
    }
    c.close();
  });
}
