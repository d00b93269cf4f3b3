// Degraded reads of 4+2 cold volumes through NBD clients: a lost pool and two
// pools of corrupted shards still read byte-exact; three lost pools give EIO,
// never wrong bytes, while the daemon and hot volumes keep working.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLIENT_ENV, TestDaemon, nbdsh, run } from './helpers/daemon.js';
import {
  MiB,
  assertSameBytes,
  coldStatus,
  createVolume,
  corruptSegments,
  destage,
  losePool,
  patternBytes,
  readExport,
  scrub,
  segmentBytes,
  segmentFiles,
  startColdDaemon,
} from './helpers/cold.js';

const VOLUME_BYTES = 32 * MiB;
/** Chunks (= stripes) holding data after the first destage: 0..23. */
const DATA_CHUNKS = 24;

/** A cold volume with 24 MiB of data destaged into 24 stripes; returns the model. */
async function coldVolumeOnStripes(work: string): Promise<{ d: TestDaemon; model: Buffer }> {
  const d = await startColdDaemon();
  await createVolume(d, 'c1', VOLUME_BYTES, 'cold');
  const model = Buffer.alloc(VOLUME_BYTES);
  patternBytes(DATA_CHUNKS * MiB, 0xdead).copy(model);
  const src = path.join(work, 'src.bin');
  fs.writeFileSync(src, model);
  run('nbdcopy', [src, d.exportUri('c1')]);
  await destage(d);
  const st = await coldStatus(d);
  assert.equal(st.stripes.Healthy, DATA_CHUNKS);
  assert.equal(st.journalBytes, 0);
  return { d, model };
}

function workDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cold-degraded-'));
}

test('after one pool directory is deleted every byte reads back exact and degraded reads are counted', async () => {
  const work = workDir();
  const { d, model } = await coldVolumeOnStripes(work);
  try {
    // fio owns chunks 24-31: random 12 KiB writes with checksummed headers, destaged too.
    const fio = ['--name=cold', '--ioengine=nbd', `--uri=${d.exportUri('c1')}`, '--rw=randwrite', '--bs=12k', `--offset=${DATA_CHUNKS * MiB}`, `--size=${VOLUME_BYTES - DATA_CHUNKS * MiB}`];
    const fioOpts = ['--iodepth=8', '--verify=crc32c', '--verify_state_save=0', '--output-format=terse'];
    run('fio', [...fio, ...fioOpts, '--do_verify=0']);
    await destage(d);
    assert.equal((await coldStatus(d)).stripes.Healthy, VOLUME_BYTES / MiB);

    losePool(d, 3);
    const got = readExport(d, 'c1', path.join(work, 'out.bin'));
    assertSameBytes(got.subarray(0, DATA_CHUNKS * MiB), model.subarray(0, DATA_CHUNKS * MiB), 'one pool lost');
    // fio re-reads its blocks (its own sizes and queue depth) and checks every checksum.
    run('fio', [...fio, ...fioOpts, '--verify_only']);
    const st = await coldStatus(d);
    // The lost pool holds a data shard of 4 in 6 stripes (the rest lost only parity, read healthy).
    const withDataShardLost = Math.floor(((VOLUME_BYTES / MiB) * 4) / 6);
    assert.ok(st.degradedReads >= withDataShardLost, `stripes missing a data shard were decoded (${st.degradedReads} degraded reads)`);
    assert.equal(st.failedReads, 0);
    // Unaligned nbdsh reads inside and across stripes see the same bytes.
    const spans = [
      [1, 4095],
      [MiB - 5000, 10_000],
      [7 * MiB + 300, 3 * MiB + 77],
    ] as const;
    const py = spans.map(([off, len]) => `sys.stdout.write(h.pread(${len}, ${off}).hex() + "\\n")`).join('\n');
    const lines = nbdsh(`import sys\nh.connect_uri(${JSON.stringify(d.exportUri('c1'))})\n${py}`).trim().split('\n');
    spans.forEach(([off, len], i) => assert.equal(lines[i], model.subarray(off, off + len).toString('hex'), `nbdsh pread ${off}+${len}`));
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('random bytes corrupted in the shards of two pools never come back as wrong data', async () => {
  const work = workDir();
  let { d, model } = await coldVolumeOnStripes(work);
  const dataDir = d.dataDir;
  try {
    const poolBytesBefore = segmentBytes(d, 1) + segmentBytes(d, 4);
    // 24 records of ~256 KiB per pool: 400 random offsets hit nearly every record, header or payload.
    const hit1 = corruptSegments(d, 1, 400, 11);
    const hit4 = corruptSegments(d, 4, 400, 44);
    assert.equal(hit1.size + hit4.size, 2, 'both pools had one segment file to corrupt');
    assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'two pools corrupted');
    let st = await coldStatus(d);
    assert.ok(st.degradedReads >= DATA_CHUNKS - 2, `corruption was found in (nearly) every stripe (${st.degradedReads} degraded reads)`);
    assert.equal(st.failedReads, 0);

    // A restart reopens the damaged segment files (corrupt headers mid-chain) and still repairs.
    await d.kill();
    d = await TestDaemon.start({ dataDir });
    assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'two pools corrupted, after restart');

    // Degraded reads queue their stripes for reconstruction; a scrub finishes
    // whatever is left. Afterwards every stripe is healthy and reads repair nothing.
    await scrub(d);
    st = await coldStatus(d);
    assert.deepEqual(st.stripes, { Healthy: DATA_CHUNKS, Degraded: 0, Reconstructing: 0, Failed: 0 });
    // Counted on disk, not by the counter: it restarts with the daemon, and the
    // first daemon may already have rebuilt some stripes before it was killed.
    const rebuiltBytes = segmentBytes(d, 1) + segmentBytes(d, 4) - poolBytesBefore;
    assert.ok(rebuiltBytes >= (DATA_CHUNKS - 2) * 256 * 1024, `corrupted shards were rebuilt as new records on their pools (${rebuiltBytes} bytes)`);
    const report = await scrub(d);
    assert.equal(report.badStripes, 0, 'a second scrub finds nothing to repair');
    assert.equal(report.stripesChecked, DATA_CHUNKS);
    const before = st.degradedReads;
    assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'after reconstruction');
    assert.equal((await coldStatus(d)).degradedReads, before, 'no degraded read after the rebuild');
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('with three pools lost reads fail with EIO, never wrong data, and the daemon and a hot volume keep working', async () => {
  const work = workDir();
  const { d, model } = await coldVolumeOnStripes(work);
  try {
    // Chunk 28 lives only in the journal (hot pool): it must stay readable.
    const journaled = patternBytes(MiB, 28);
    fs.writeFileSync(path.join(work, 'j.bin'), journaled);
    nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\nh.pwrite(open(${JSON.stringify(path.join(work, 'j.bin'))}, 'rb').read(), ${28 * MiB})\nh.flush()`);
    journaled.copy(model, 28 * MiB);
    losePool(d, 0);
    losePool(d, 2);
    losePool(d, 5);

    const copy = spawnSync('nbdcopy', [d.exportUri('c1'), path.join(work, 'out.bin')], { env: CLIENT_ENV, encoding: 'utf8' });
    assert.notEqual(copy.status, 0, 'nbdcopy of a volume with unreadable stripes fails');
    assert.match(copy.stderr, /Input\/output error|EIO/i);

    // Per chunk: EIO for every stripe, exact bytes for journal-only and never-written chunks.
    const out = nbdsh(
      `import sys, errno\n` +
        `h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\n` +
        `for c in range(${VOLUME_BYTES / MiB}):\n` +
        `  try:\n` +
        `    sys.stdout.write("%d ok %s\\n" % (c, h.pread(65536, c * ${MiB} + 4096).hex()))\n` +
        `  except nbd.Error as e:\n` +
        `    sys.stdout.write("%d err %s\\n" % (c, errno.errorcode.get(e.errno, e.errno)))\n`,
    );
    const lines = out.trim().split('\n');
    assert.equal(lines.length, VOLUME_BYTES / MiB);
    for (const line of lines) {
      const [cs, kind, rest] = line.split(' ');
      const c = Number(cs);
      if (c < DATA_CHUNKS) {
        assert.equal(`${kind} ${rest}`, 'err EIO', `chunk ${c} (a stripe missing 3 of 6 shards)`);
      } else {
        assert.equal(kind, 'ok', `chunk ${c} (not on stripes) is readable`);
        assert.equal(rest, model.subarray(c * MiB + 4096, c * MiB + 4096 + 65536).toString('hex'), `chunk ${c} bytes`);
      }
    }
    const st = await coldStatus(d);
    assert.ok(st.failedReads >= DATA_CHUNKS, `failed reads counted (${st.failedReads})`);
    assert.equal(d.proc.exitCode, null, 'daemon still running');

    // The daemon keeps serving: a new hot volume round-trips through nbdcopy.
    await createVolume(d, 'h1', 8 * MiB, 'hot');
    const hot = patternBytes(8 * MiB, 99);
    fs.writeFileSync(path.join(work, 'hot.bin'), hot);
    run('nbdcopy', [path.join(work, 'hot.bin'), d.exportUri('h1')]);
    assertSameBytes(readExport(d, 'h1', path.join(work, 'hot-out.bin')), hot, 'hot volume beside a failed cold volume');
    assert.equal(segmentFiles(d, 0).length, 0, 'lost pool stays lost (nothing recreated it)');
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
