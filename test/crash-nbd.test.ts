// Crash safety of the NBD write path: random writes, trims and zeroes (some
// FUA, some followed by FLUSH) while the daemon is SIGKILLed at random
// moments; after each restart every flushed byte must be there, and every
// other byte must hold a value some unflushed request could have left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { crashDaemons, killDuringWrites } from './helpers/daemon.js';
import { CMD, ConnectionClosed, RawNbd } from './helpers/nbd-client.js';
import { Model, workload } from './helpers/crash-model.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 24 * MiB;
const ROUNDS = 6;
const WORKERS = 8;
const MAX_OP_BYTES = 2 * MiB;

const start = crashDaemons();

async function readAll(c: RawNbd): Promise<Buffer> {
  const r = await c.readAt(0, VOLUME_BYTES);
  assert.equal(r.error, 0);
  return r.data;
}

test('SIGKILL during random writes loses only unflushed data', async () => {
  let daemon = await start();
  daemon.createVolume('crash', `${VOLUME_BYTES}`);
  const model = new Model(VOLUME_BYTES);
  let totalAcked = 0;
  let totalFlushes = 0;
  let killsWithInflight = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const c = await RawNbd.connect({ port: daemon.info.nbd.port });
    await c.handshake('crash', { structured: round % 2 === 1 });
    const stats = { acked: 0, flushes: 0, inflight: 0 };
    const running = workload(c, model, stats, { workers: WORKERS, maxOpBytes: MAX_OP_BYTES });
    await new Promise((r) => setTimeout(r, 300 + crypto.randomInt(0, 1200)));
    if (stats.inflight > 0) killsWithInflight++;
    await daemon.kill();
    await running;
    totalAcked += stats.acked;
    totalFlushes += stats.flushes;

    daemon = await start(daemon.dataDir);
    const v = await RawNbd.connect({ port: daemon.info.nbd.port });
    await v.handshake('crash');
    const actual = await readAll(v);
    const bad = model.violations(actual);
    assert.deepEqual(bad, [], `round ${round}: after ${stats.acked} acked ops and ${stats.flushes} flushes:\n${bad.join('\n')}`);
    // What survived is the new baseline once flushed.
    assert.equal((await v.flush()).error, 0);
    model.reset(actual);
    v.close();
  }
  // The test means something only if it really crashed mid-stream with work acknowledged.
  assert.ok(totalAcked > 200, `only ${totalAcked} ops were acknowledged`);
  assert.ok(totalFlushes > 10, `only ${totalFlushes} flushes`);
  assert.ok(killsWithInflight >= ROUNDS - 1, `only ${killsWithInflight} of ${ROUNDS} kills hit requests in flight`);
  await daemon.stop();
});

test('multi-conn: FLUSH on one connection makes writes acknowledged on another durable across SIGKILL', async () => {
  let daemon = await start();
  daemon.createVolume('mc', '16M');
  const a = await RawNbd.connect({ port: daemon.info.nbd.port });
  const b = await RawNbd.connect({ path: daemon.info.nbd.socketPath });
  await a.handshake('mc');
  await b.handshake('mc', { structured: true });
  const data = crypto.randomBytes(3 * MiB);
  // Spread over fresh chunks so the chunk map (not just file bytes) must be durable.
  assert.equal((await a.writeAt(MiB / 2, data)).error, 0);
  assert.equal((await a.command(CMD.WRITE_ZEROES, 0, 8 * MiB, MiB)).error, 0);
  assert.equal((await b.flush()).error, 0);
  const viaB = await b.readAt(MiB / 2, data.length);
  assert.ok(viaB.data.equals(data), 'connection B does not see what A wrote');
  await daemon.kill();
  daemon = await start(daemon.dataDir);
  const c = await RawNbd.connect({ port: daemon.info.nbd.port });
  await c.handshake('mc');
  assert.ok((await c.readAt(MiB / 2, data.length)).data.equals(data), 'flushed data lost after SIGKILL');
  assert.ok((await c.readAt(8 * MiB, MiB)).data.equals(Buffer.alloc(MiB)));
  c.close();
  await daemon.stop();
});

test('an unflushed write lost in a crash never reappears when its chunk is written again', async () => {
  // A write to a never-used chunk records the chunk as allocated and writes
  // its bytes; a crash may keep the bytes but lose the record. The chunk then
  // reads as zeros, and must keep doing so when it is allocated again later.
  const CHUNKS = 2048;
  const WRITE_BYTES = 4096;
  let daemon = await start();
  daemon.createVolume('fresh', `${CHUNKS}M`);
  const c = await RawNbd.connect({ port: daemon.info.nbd.port });
  await c.handshake('fresh');
  const spot = (i: number) => i * MiB + 64 * 1024 + (i % 7) * 8192;
  const pattern = (i: number) => Buffer.alloc(WRITE_BYTES, (i % 250) + 1);
  // One write at a time: each chunk record then waits behind the previous
  // metadata commit while its bytes are already written, and a kill at any
  // moment likely catches acknowledged writes whose record is not committed.
  const {
    acked,
    stopped: [stopped],
  } = await killDuringWrites(daemon, [
    async (ack) => {
      for (let i = 0; i < CHUNKS; i++) {
        assert.equal((await c.writeAt(spot(i), pattern(i))).error, 0);
        ack();
      }
    },
  ]);
  assert.ok(stopped === null || stopped instanceof ConnectionClosed, String(stopped));
  assert.ok(acked >= 20 && acked < CHUNKS, `${acked} writes were acknowledged before the kill`);

  daemon = await start(daemon.dataDir);
  const v = await RawNbd.connect({ port: daemon.info.nbd.port });
  await v.handshake('fresh');
  const seen: Buffer[] = [];
  for (let i = 0; i < CHUNKS; i++) {
    const r = await v.readAt(spot(i), WRITE_BYTES);
    assert.ok(r.data.equals(pattern(i)) || r.data.equals(Buffer.alloc(WRITE_BYTES)), `chunk ${i}: neither the write nor zeros`);
    seen.push(r.data);
  }
  assert.equal((await v.flush()).error, 0);
  // Allocate every chunk again through a write elsewhere in it.
  await Promise.all(Array.from({ length: CHUNKS }, (_, i) => v.writeAt(i * MiB, Buffer.alloc(512, 0xff))));
  assert.equal((await v.flush()).error, 0);
  const resurrected: number[] = [];
  for (let i = 0; i < CHUNKS; i++) {
    const r = await v.readAt(spot(i), WRITE_BYTES);
    if (!r.data.equals(seen[i]!)) resurrected.push(i);
  }
  const lost = seen.slice(0, acked).filter((b, i) => !b.equals(pattern(i))).length;
  assert.deepEqual(resurrected, [], `${resurrected.length} chunks (of ${lost} whose acknowledged write was lost) show it again after reallocation`);
  v.close();
  await daemon.stop();
});
