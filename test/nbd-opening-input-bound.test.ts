// While an NBD client's option waits for its export's volume to open (a big
// chunk map read a slice at a time), the connection reads the client's input
// up to a bound (64 KiB, OPENING_MAX_QUEUED_BYTES) and then stops reading
// (8524824: read so that a hang-up is seen at once). Each read went into the
// server's 256 KiB shared read buffer whole, so a client that sent on made the
// daemon hold up to one such read past the bound: ~220 KiB per connection over
// the Unix socket, for each of up to 1,024 connections. Now no read goes past
// the bound. What was queued meanwhile (requests pipelined after NBD_OPT_GO,
// more than the bound) is served in order, none lost, once the open ends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import path from 'node:path';
import { nbdOverBigHotVolume } from './helpers/big-chunk-map.js';
import { CMD, OPT, REP, RawNbd, SIMPLE_REPLY_MAGIC, goData } from './helpers/nbd-client.js';

const CHUNKS = 300_000;
const CHUNK_BYTES = 4096;
const BOUND_BYTES = 64 * 1024;
/** READ requests pipelined after the NBD_OPT_GO: 28 bytes each, ~3.4x the bound. */
const READS = 8000;

test(`input a client sends while its export's volume (${CHUNKS} chunk entries) opens is read up to 64 KiB, then served in order once the open ends`, async (t) => {
  const { dir, manager, nbd } = await nbdOverBigHotVolume(t, 'couchestor-nbd-open-bound-', CHUNKS, CHUNK_BYTES);
  // The Unix socket: its reads fill the shared buffer further than loopback TCP's.
  const socketPath = path.join(dir, 'nbd.sock');
  await nbd.listenUnix(socketPath);

  const c = await RawNbd.connect({ path: socketPath });
  t.after(() => c.close());
  await c.greeting();
  c.sendClientFlags(3);
  const go = goData('big');
  c.sendOption(OPT.GO, go);
  const handshakeBytes = 4 + 16 + go.length;
  const requests = Buffer.concat(Array.from({ length: READS }, (_, i) => RawNbd.requestHeader(CMD.READ, 0, BigInt(i), 0, CHUNK_BYTES)));
  c.write(requests);

  const server = [...(nbd as unknown as { sockets: Set<net.Socket> }).sockets][0]!;
  // Until the connection stops reading (the bound reached) or the open ends.
  const deadline = Date.now() + 20_000;
  while (!server.isPaused() && !manager.isOpen('big') && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  const readDuringOpen = server.bytesRead - handshakeBytes;
  assert.equal(manager.isOpen('big'), false, 'premise: the volume is still opening');
  assert.ok(server.isPaused(), 'premise: the connection stopped reading');
  assert.ok(readDuringOpen <= BOUND_BYTES, `read ${readDuringOpen} bytes of the client's input while the open ran (bound ${BOUND_BYTES})`);

  // The open ends: the GO is answered, then every READ queued or left in the socket, none lost.
  const replies = await c.readOptionReplies();
  assert.equal(replies.at(-1)!.type, REP.ACK, `NBD_OPT_GO answered 0x${replies.at(-1)!.type.toString(16)} ${replies.at(-1)!.data.toString()}`);
  const seen = new Set<bigint>();
  for (let i = 0; i < READS; i++) {
    const h = await c.read(16);
    assert.equal(h.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
    assert.equal(h.readUInt32BE(4), 0, `READ ${h.readBigUInt64BE(8)} failed`);
    seen.add(h.readBigUInt64BE(8));
    assert.ok((await c.read(CHUNK_BYTES)).equals(Buffer.alloc(CHUNK_BYTES)));
  }
  assert.equal(seen.size, READS, 'every pipelined READ answered once');
});
