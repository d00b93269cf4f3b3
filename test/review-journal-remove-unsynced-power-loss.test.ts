// Review of 72a8e74, pinned: the interleaving its removal fdatasync and "syncs take files being
// removed" exist for, driven step by step through the power-loss model (helpers/power-loss-fs)
// rather than found by chance. A journal file's last records, never fdatasynced, are all
// destaged; the file is removed; a FLUSH after that claims them in its marker and the marker is
// made durable by the next FLUSH (no new file in between, so no directory fsync makes the unlink
// durable). A power cut then brings the file back with any part of its unsynced bytes: the open
// must not refuse. The default seeds of journal-power-loss pass with the removal's fdatasync
// removed (measured: 30 seeds, and seeds 2000-2099); this test fails without it, and without the
// sync's taking of files in `removing`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { checkJournalDir, RecordType } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { block, BLOCK_BYTES, journalFile, MiB, openTestJournal, RECORD_BYTES } from './helpers/journal.js';
import { PowerLossFs, seededRandom } from './helpers/power-loss-fs.js';

const CRASH_STATES = 64;

function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

test('a file whose unsynced records are all destaged, removed before the FLUSH that claims them: no power cut makes the open refuse', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const plfs = PowerLossFs.install(t);
  const root = tempDir(t, 'couchestor-review-remove-unsynced-');
  const dir = path.join(root, 'journal');
  fs.mkdirSync(dir);
  const model = plfs.track(dir);
  // Always the call issued last: the removal's unlink (issued early) completes after every
  // FLUSH's calls, so no directory fsync covers it.
  const lifo = () => 0.999999;
  // Two records per file (a rotated file: its fence, then two).
  const j = openTestJournal(dir, { fileBytes: 2 * RECORD_BYTES + 200 });
  const write = async (seq: number, chunk: number) => {
    await plfs.pumpUntil(j.append(RecordType.Write, 1, chunk * MiB, BLOCK_BYTES, block(seq)), lifo);
  };
  // File 1: seqs 1, 2 (chunk 0). Seq 3 rotates into file 2 (chunk 1), and a FLUSH makes file 2's
  // name, fence and seq 3 durable.
  await write(1, 0);
  await write(2, 0);
  await write(3, 1);
  await plfs.pumpUntil(j.sync(), lifo);
  // Seq 4 into file 2 (chunk 1), never fdatasynced by a FLUSH; seq 5 rotates into file 3.
  await write(4, 1);
  await write(5, 2);
  // A destage of chunk 1 (seqs 3, 4): file 2 has no live record and goes. Its claim marker (the
  // first FLUSH's marker rode on seq 4) is re-written into file 3 first: let that land, and the
  // removal go on as far as it can without another call completing.
  const file2 = path.basename(journalFile(dir, 2));
  const file2AsWritten = fs.readFileSync(path.join(dir, file2));
  j.release(1, 1, Number.MAX_SAFE_INTEGER);
  assert.equal(plfs.pending, 1, 'the claim marker write, alone');
  plfs.runOne(lifo);
  for (let i = 0; i < 5; i++) await turn();
  // FLUSH 2 (its marker claims seq 4, in stripes now), written on seq 6's writev; FLUSH 3 makes
  // that marker durable. Neither creates a file: no directory fsync.
  await plfs.pumpUntil(j.sync(), lifo);
  await write(6, 3);
  await plfs.pumpUntil(j.sync(), lifo);
  const cut = plfs.mark();
  // States with file 2 back (its unlink undone), and those where it came back not as written
  // (none once it was fdatasynced before the claim: the count is for the diagnostic).
  let file2Back = 0;
  let file2BackDamaged = 0;
  for (let k = 0; k < CRASH_STATES; k++) {
    const into = path.join(root, `state-${k}`);
    fs.mkdirSync(into);
    const stats = model.crashState(cut, seededRandom(7000 + k), into);
    const back = path.join(into, file2);
    if (fs.existsSync(back)) {
      file2Back++;
      if (!fs.readFileSync(back).equals(file2AsWritten)) file2BackDamaged++;
    }
    const where = `crash state ${k} (${JSON.stringify(stats)})`;
    assert.deepEqual(checkJournalDir(into).damaged, [], `${where}: fsck calls a pure power cut damage`);
    let j2;
    try {
      // Chunk 1 is destaged up to seq 4 (its index entry durable before the release).
      j2 = openTestJournal(into, { destagedSeq: (_v, c) => (c === 1 ? 4 : 0), highestDestagedSeq: 4 });
    } catch (err) {
      assert.fail(`${where}: the open refused a pure power cut: ${(err as Error).message}`);
    }
    // Every write FLUSH 1 covered and not destaged is replayed (seqs 1, 2 in chunk 0).
    assert.equal(j2.extents(1, 0)?.length, 2, `${where}: flushed writes of chunk 0 replayed`);
    await j2.close();
  }
  t.diagnostic(`${CRASH_STATES} crash states: file 2 back in ${file2Back}, not as written in ${file2BackDamaged}`);
  // The state the test is about was produced: the removed file back beside the marker claiming it.
  assert.ok(file2Back > 0, `no crash state undid file 2's unlink (of ${CRASH_STATES})`);
  await plfs.pumpUntil(j.close(), lifo);
  await plfs.drain(lifo);
});
