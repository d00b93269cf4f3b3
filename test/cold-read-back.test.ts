// Cold (4+2) volumes read back byte-exact through real NBD clients (nbdcopy,
// fio verify, nbdsh) from the journal, from stripes, and across restarts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, run, nbdsh } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG, MiB, assertSameBytes, coldStatus, createVolume, destage, patternBytes, readExport, startColdDaemon } from './helpers/cold.js';

const VOLUME_BYTES = 32 * MiB;
/** fio owns this range (its own verify headers); nbdcopy's image leaves it zero. */
const FIO_OFFSET_BYTES = 20 * MiB;
const FIO_LENGTH_BYTES = 6 * MiB;

/** Source image: data with holes, unaligned edges and chunk-crossing runs; fio's range left zero. */
function sourceImage(): Buffer {
  const img = patternBytes(VOLUME_BYTES, 0xc01d);
  img.fill(0, 5 * MiB, 7 * MiB); // two whole chunks never written: holes
  img.fill(0, 9 * MiB + 4096, 9 * MiB + 3 * 4096); // a zero run inside a data chunk
  img.fill(0, FIO_OFFSET_BYTES, FIO_OFFSET_BYTES + FIO_LENGTH_BYTES);
  img.fill(0, 29 * MiB, VOLUME_BYTES); // tail of the volume never written
  return img;
}

/** Reads the whole export with nbdcopy and asserts it equals `model` except fio's range. */
function assertReadsBack(d: TestDaemon, work: string, model: Buffer, phase: string): void {
  const got = readExport(d, 'c1', path.join(work, 'readback.bin'));
  assert.equal(got.length, model.length, `${phase}: export size`);
  const cut = (b: Buffer) => Buffer.concat([b.subarray(0, FIO_OFFSET_BYTES), b.subarray(FIO_OFFSET_BYTES + FIO_LENGTH_BYTES)]);
  assertSameBytes(cut(got), cut(model), `${phase} (fio range cut out)`);
}

function fioArgs(d: TestDaemon): string[] {
  return [
    '--name=cold',
    '--ioengine=nbd',
    `--uri=${d.exportUri('c1')}`,
    '--rw=write',
    '--bs=64k',
    `--offset=${FIO_OFFSET_BYTES}`,
    `--size=${FIO_LENGTH_BYTES}`,
    '--iodepth=4',
    '--verify=crc32c',
    '--output-format=terse',
    '--verify_state_save=0', // no state file in the working directory
  ];
}

/** fio re-reads its range and checks every block's checksum and offset header. */
function assertFioVerifies(d: TestDaemon): void {
  run('fio', [...fioArgs(d), '--verify_only']);
}

test('a 4+2 cold volume reads back byte-exact from the journal, from stripes, and after SIGTERM and SIGKILL restarts', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-read-back-'));
  let d = await startColdDaemon(MANUAL_DESTAGE_CONFIG);
  const dataDir = d.dataDir;
  try {
    await createVolume(d, 'c1', VOLUME_BYTES, 'cold');
    const model = sourceImage();
    const src = path.join(work, 'src.bin');
    fs.writeFileSync(src, model);
    run('nbdcopy', [src, d.exportUri('c1')]);
    run('fio', [...fioArgs(d), '--do_verify=0']);

    // Before destage every byte comes from the journal: no stripe exists yet.
    let st = await coldStatus(d);
    assert.equal(st.stripesWritten, 0);
    assert.ok(st.journalBytes >= 26 * MiB, `journal holds the writes (${st.journalBytes} bytes)`);
    assertReadsBack(d, work, model, 'from the journal');
    assertFioVerifies(d);
    // nbdsh: a read that crosses a chunk boundary, unaligned at both ends.
    const span = nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\nimport sys\nsys.stdout.write(h.pread(${2 * MiB + 999}, ${3 * MiB - 777}).hex())`);
    assert.equal(span, model.subarray(3 * MiB - 777, 5 * MiB + 222).toString('hex'));

    // Once through the CLI (the same endpoints the helpers call).
    const cli = d.cli('destage');
    assert.equal(cli.status, 0, cli.stderr);
    assert.equal((JSON.parse(d.cli('cold').stdout) as { journalBytes: number }).journalBytes, 0, 'destage drained the journal');
    st = await coldStatus(d);
    // Chunks 0-4, 7-19 (data), 20-25 (fio) and 26-28: 27 chunks hold data; 5, 6 and 29-31 are holes.
    assert.equal(st.stripes.Healthy, 27);
    assert.equal(st.stripesWritten, 27);
    const healthyBefore = st.healthyReads;
    assertReadsBack(d, work, model, 'from stripes');
    assertFioVerifies(d);
    st = await coldStatus(d);
    assert.ok(st.healthyReads > healthyBefore, 'reads were served by stripes');
    assert.equal(st.degradedReads, 0);

    assert.equal(await d.stop(), 0, 'clean SIGTERM exit');
    d = await TestDaemon.start({ dataDir });
    assertReadsBack(d, work, model, 'after SIGTERM restart');
    assertFioVerifies(d);

    // Overwrite parts of destaged chunks, flush, then SIGKILL: the journal is replayed.
    const patch = patternBytes(3 * MiB + 4096, 77);
    const patchAt = 1 * MiB + 512;
    fs.writeFileSync(path.join(work, 'patch.bin'), patch);
    nbdsh(
      `h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\n` +
        `h.pwrite(open(${JSON.stringify(path.join(work, 'patch.bin'))}, 'rb').read(), ${patchAt})\n` +
        `h.zero(${64 * 1024}, ${16 * MiB - 4096})\n` +
        `h.flush()`,
    );
    patch.copy(model, patchAt);
    model.fill(0, 16 * MiB - 4096, 16 * MiB - 4096 + 64 * 1024);
    await d.kill();
    d = await TestDaemon.start({ dataDir });
    st = await coldStatus(d);
    assert.ok(st.journalBytes > 3 * MiB, `replayed journal holds the flushed writes (${st.journalBytes} bytes)`);
    assertReadsBack(d, work, model, 'after SIGKILL restart (journal replay)');
    assertFioVerifies(d);

    await destage(d);
    assertReadsBack(d, work, model, 'after destaging the replayed journal');
    await d.kill();
    d = await TestDaemon.start({ dataDir });
    assertReadsBack(d, work, model, 'after SIGKILL restart of a destaged volume');
    assertFioVerifies(d);
    assert.equal((await coldStatus(d)).stripes.Failed, 0);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

// Regression: journal sequence numbers restarted at 1 once every journal file
// was destaged and removed, so after a SIGKILL the replay skipped a flushed
// write as "already destaged" (its seq was below the chunk's destagedSeq).
test('a write flushed after the journal was fully destaged and the daemon restarted twice survives SIGKILL', async () => {
  let d = await startColdDaemon(MANUAL_DESTAGE_CONFIG);
  const dataDir = d.dataDir;
  const uri = () => JSON.stringify(d.exportUri('c1'));
  try {
    await createVolume(d, 'c1', 8 * MiB, 'cold');
    nbdsh(`h.connect_uri(${uri()})\nfor i in range(40):\n  h.pwrite(b"A" * 4096, i * 4096)\nh.flush()`);
    await destage(d);
    assert.equal(await d.stop(), 0);
    d = await TestDaemon.start({ dataDir });
    assert.equal(await d.stop(), 0);
    d = await TestDaemon.start({ dataDir });
    nbdsh(`h.connect_uri(${uri()})\nh.pwrite(b"B" * 8192, 4096)\nh.flush()`);
    await d.kill();
    d = await TestDaemon.start({ dataDir });
    const got = nbdsh(`h.connect_uri(${uri()})\nimport sys\nsys.stdout.write(h.pread(4 * 4096, 0).decode())`);
    assert.equal(got, 'A'.repeat(4096) + 'B'.repeat(8192) + 'A'.repeat(4096));
  } finally {
    await d.cleanup();
  }
});
