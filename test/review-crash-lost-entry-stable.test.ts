// Review (crash between a fresh chunk's pwrite and its chunk-map commit):
// such a chunk is Unallocated in the index yet holds the unflushed write's
// bytes in the volume file. The plain read path returned the file's bytes
// (the write "survived"), readPiece zeros, and a hot -> warm move copies
// only Allocated chunks: after the move the range read as zeros, with no
// write in between (a filesystem that replayed its journal against the
// first read sees its blocks change later). Now such a chunk reads as zeros
// on every path and is zeroed before it is allocated again. Checked: what a
// range reads right after the restart it still reads after a write
// elsewhere in its chunk (half the chunks), after a move to warm, and after
// a move back to hot. Failed 3 of 3 runs before the fix (1-5 of 1024
// chunks changed after the move); fails with only the read side of the fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crashDaemons, killDuringWrites } from './helpers/daemon.js';
import { ConnectionClosed, RawNbd } from './helpers/nbd-client.js';
import { migrate, startWarmDaemon } from './helpers/hot-warm.js';

const MiB = 1024 * 1024;
const CHUNKS = 1024;
const WRITE_BYTES = 4096;

const start = crashDaemons(startWarmDaemon);

test('after a crash, what an unflushed write left in a fresh chunk reads the same after a write elsewhere in the chunk and after moves to warm and back', async (t) => {
  let daemon = await start();
  daemon.createVolume('fresh', `${CHUNKS}M`);
  const c = await RawNbd.connect({ port: daemon.info.nbd.port });
  await c.handshake('fresh');
  const spot = (i: number) => i * MiB + 64 * 1024;
  const pattern = (i: number) => Buffer.alloc(WRITE_BYTES, (i % 250) + 1);
  // WRITERS loops over disjoint chunks, one write at a time each: each
  // chunk entry waits behind earlier metadata commits while its bytes are
  // already written, so a kill likely catches several such chunks.
  const WRITERS = 4;
  const { acked, stopped: writers } = await killDuringWrites(
    daemon,
    Array.from({ length: WRITERS }, (_, w) => async (ack: () => void) => {
      for (let i = w; i < CHUNKS; i += WRITERS) {
        assert.equal((await c.writeAt(spot(i), pattern(i))).error, 0);
        ack();
      }
    }),
  );
  for (const stopped of writers) assert.ok(stopped === null || stopped instanceof ConnectionClosed, String(stopped));

  daemon = await start(daemon.dataDir);
  const v = await RawNbd.connect({ port: daemon.info.nbd.port });
  await v.handshake('fresh');
  const seen: Buffer[] = [];
  for (let i = 0; i < CHUNKS; i++) seen.push((await v.readAt(spot(i), WRITE_BYTES)).data);
  t.diagnostic(`${acked} writes acknowledged before the kill; after the restart ${seen.filter((b, i) => b.equals(pattern(i))).length} chunks read their write, ${seen.filter((b) => b.equals(Buffer.alloc(WRITE_BYTES))).length} read zeros`);
  // Even chunks get a write elsewhere in them (allocated again in the file opened at start).
  for (let i = 0; i < CHUNKS; i += 2) assert.equal((await v.writeAt(i * MiB, Buffer.alloc(512, 0xff))).error, 0);
  assert.equal((await v.flush()).error, 0);
  const check = async (when: string) => {
    const w = await RawNbd.connect({ port: daemon.info.nbd.port });
    await w.handshake('fresh');
    const changed: number[] = [];
    for (let i = 0; i < CHUNKS; i++) if (!(await w.readAt(spot(i), WRITE_BYTES)).data.equals(seen[i]!)) changed.push(i);
    w.close();
    assert.deepEqual(changed, [], `${when}: ${changed.length} chunks read differently from right after the restart, with no write to that range (acked before the kill: ${acked})`);
  };
  await check('after writes elsewhere in the even chunks');
  v.close();
  await migrate(daemon, 'fresh', 'warm');
  await check('after the move to warm');
  await migrate(daemon, 'fresh', 'hot');
  await check('after the move back to hot');
  await daemon.stop();
});
