// A clean close ends the head file with an end marker, so the next open and
// `couchestor fsck` see a clean stop: no torn tail, nothing cut, every record
// replayed. The case that mattered: a head reused from a spare holds the old
// file's items past its tail; without the end they were cut at every open
// and counted as a torn tail after a clean stop. A stop without close (what a
// SIGKILL leaves: every write landed, no end) is still reported and cut.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JOURNAL_SPARE_FILES, RecordType, checkJournalDir, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, block, journalFiles, openTestJournal, sparedJournal } from './helpers/journal.js';

/** Seqs the first run wrote and destaged (blocks 0-19 of volume 1). */
const DESTAGED_SEQ = 20;

function open(dir: string): Journal {
  // Files of six records: the spares the first run leaves are larger than what a short run writes over them.
  return openTestJournal(dir, { fileBytes: 6 * RECORD_BYTES, destagedSeq: () => DESTAGED_SEQ, highestDestagedSeq: DESTAGED_SEQ });
}

/** Writes blocks `from`..`to - 1` (flushed each), then block `to` unflushed: what a stop finds. */
async function writeRun(j: Journal, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j.sync();
  }
  await j.append(RecordType.Write, 1, to * BLOCK_BYTES, BLOCK_BYTES, block(to));
}

function sizes(dir: string): Map<string, number> {
  return new Map(journalFiles(dir).map((f) => [path.basename(f), fs.statSync(f).size]));
}

/** Block -> its bytes as replayed (volume 1, chunk 0), checked against block(i). */
function replayedBlocks(j: Journal): number[] {
  return (j.extents(1, 0) ?? []).map((e) => {
    const i = e.offsetBytes / BLOCK_BYTES;
    assert.ok(e.data?.equals(block(i)), `block ${i} replayed with other bytes`);
    return i;
  });
}

test('a clean close after writing into a head reused from a spare: fsck finds no torn tail, the next open cuts nothing and replays every record', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-clean-close-');
  await sparedJournal(dir, DESTAGED_SEQ, { fileBytes: 6 * RECORD_BYTES });
  const j1 = open(dir);
  assert.equal(j1.spareFiles.length, JOURNAL_SPARE_FILES - 1, "the open's head took a spare");
  await writeRun(j1, 20, 22);
  await j1.close();
  const [head] = journalFiles(dir).slice(-1);
  const scan = scanJournalFile(head!);
  assert.ok(scan.ended, 'the head ends with an end marker');
  assert.ok(scan.endBytes < scan.lengthBytes, 'the head holds the spare\'s old bytes past its end (the case under test)');
  // Before: tornTails 1 (the spare's old bytes past the head's last record).
  assert.deepEqual(checkJournalDir(dir), { filesScanned: journalFiles(dir).length, recordsScanned: 3, tornTails: 0, damaged: [] });
  const before = sizes(dir);
  const j2 = open(dir);
  t.after(() => j2.close());
  // Before: the head was truncated at its last record (a torn tail logged).
  for (const [name, sizeBytes] of before) assert.equal(fs.statSync(path.join(dir, name)).size, sizeBytes, `the open cut ${name}`);
  // The unflushed write too: a clean close makes every landed write durable.
  assert.deepEqual(replayedBlocks(j2), [20, 21, 22]);
});

test('clean stops and starts, three times over, with writes between: no torn tail at any start, every record replayed', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-clean-restarts-');
  await sparedJournal(dir, DESTAGED_SEQ, { fileBytes: 6 * RECORD_BYTES });
  let next = 20;
  for (let round = 0; round < 3; round++) {
    const j = open(dir);
    await writeRun(j, next, next + 2);
    next += 3;
    await j.close();
    assert.equal(checkJournalDir(dir).tornTails, 0, `round ${round}: fsck reports a torn tail after a clean stop`);
  }
  const before = sizes(dir);
  const j = open(dir);
  t.after(() => j.close());
  for (const [name, sizeBytes] of before) assert.equal(fs.statSync(path.join(dir, name)).size, sizeBytes, `the open cut ${name}`);
  assert.deepEqual(replayedBlocks(j), Array.from({ length: 9 }, (_, i) => 20 + i));
});

test('a stop without close (a SIGKILL: every write landed, no end marker) is still reported as a torn tail and cut at the next open', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-killed-');
  await sparedJournal(dir, DESTAGED_SEQ, { fileBytes: 6 * RECORD_BYTES });
  const killed = open(dir);
  await writeRun(killed, 20, 22);
  // Not closed: what the page cache holds after a SIGKILL (the appends' writevs all returned).
  const [head] = journalFiles(dir).slice(-1);
  const scan = scanJournalFile(head!);
  assert.equal(scan.ended, false);
  const fsck = checkJournalDir(dir);
  assert.equal(fsck.tornTails, 1, 'a stop without close must be reported');
  assert.deepEqual(fsck.damaged, []);
  const j = open(dir);
  assert.equal(fs.statSync(head!).size, scan.endBytes, 'the torn tail is cut at the last intact item');
  assert.deepEqual(replayedBlocks(j), [20, 21, 22]);
  await j.close();
  // Only now: its descriptors must outlive the checks above (its own close writes into a file the open cut).
  await killed.close();
});
