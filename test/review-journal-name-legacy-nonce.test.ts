// Review of 7e96923 (the nonce in the journal file's name): a file named before nonces
// (journal-<no>.log) has no name to take the nonce from, so the scan takes its first item's. The
// nonce sits outside the CRC (bytes 36-39), so the first item still verifies with a bit flipped
// there; taken as the file's nonce, it made every later item (nonce 0, as every build before
// nonces wrote) "another file's": the flushed writes after the first became a torn tail that no
// marker claimed (the file's own markers were rejected too), cut at open with no refusal. A build
// before nonces never read those bytes and replayed them all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { checkJournalDir, RecordType, scanJournalBytes, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, flipBit, journalFiles, MiB, nameNonce, openTestJournal } from './helpers/journal.js';

const NONCE_OFFSET = 36;

function replayed(j: Journal): [number, number, number | null][] {
  return [0, 1, 2].flatMap((c) => (j.extents(1, c) ?? []).map((e) => [e.seq, e.offsetBytes, e.data ? e.data[0]! : null] as [number, number, number | null]));
}

test('a file named before nonces whose first item has a bit flipped in its (unchecked) nonce bytes: its flushed writes are replayed, not cut', async (t) => {
  const dir = tempDir(t, 'couchestor-review-journal-name-legacy-');
  const j0 = openTestJournal(dir);
  await j0.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10));
  await j0.sync();
  await j0.append(RecordType.Write, 1, MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x11));
  await j0.sync();
  await j0.close();
  // What a build before nonces wrote: the old name, zeros at bytes 36-39 of every item.
  const [named] = journalFiles(dir);
  const file1 = path.join(dir, 'journal-0000000001.log');
  fs.renameSync(named!, file1);
  const bytes = fs.readFileSync(file1);
  const scan = scanJournalBytes(bytes, nameNonce(named!));
  assert.equal(scan.records.length, 2);
  assert.equal(scan.records[0]!.posBytes, 0, 'the first item is write 1');
  for (const pos of [...scan.records.map((r) => r.posBytes), ...scan.markers.map((m) => m.posBytes)]) bytes.fill(0, pos + NONCE_OFFSET, pos + NONCE_OFFSET + 4);
  fs.writeFileSync(file1, bytes);
  const lengthBytes = bytes.length;
  // Media damage at rest to the first item's nonce bytes (outside its CRC).
  flipBit(file1, NONCE_OFFSET);
  const legacy = scanJournalFile(file1);
  assert.deepEqual(
    legacy.records.map((r) => r.rec.seq),
    [1, 2],
    'both flushed writes are intact records (a build before nonces reads them so)',
  );
  assert.equal(legacy.endBytes, lengthBytes, 'no torn tail');
  const fsck = checkJournalDir(dir);
  assert.equal(fsck.tornTails, 0, 'fsck finds nothing for a start to cut');
  assert.deepEqual(fsck.damaged, []);
  const j = openTestJournal(dir);
  t.after(() => j.close());
  assert.deepEqual(replayed(j), [
    [1, 0, 0x10],
    [2, MiB, 0x11],
  ]);
  assert.equal(fs.statSync(file1).size, lengthBytes, 'nothing cut from the file');
});

test('a file named before nonces whose items carry one (the build between nonces in items and in names): the nonce is still its items\', and an image of another file is not taken', async (t) => {
  const dir = tempDir(t, 'couchestor-review-journal-name-legacy2-');
  const j0 = openTestJournal(dir);
  await j0.append(RecordType.Write, 1, 0, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x10));
  await j0.append(RecordType.Write, 1, MiB, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x11));
  await j0.sync();
  await j0.close();
  const [named] = journalFiles(dir);
  const nonce = nameNonce(named!);
  const file1 = path.join(dir, 'journal-0000000001.log');
  fs.renameSync(named!, file1);
  assert.equal(scanJournalFile(file1).nonce, nonce, "its first two items agree: that nonce, not any");
});
