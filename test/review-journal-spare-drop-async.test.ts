// A spare deleted to make room for a write (spares count in the capacity)
// is not unlinked on the event loop: an unlink frees the file's blocks in the
// call (17-31 ms for the append that drops a 64 MiB spare on ext4, measured,
// against ~1 ms for the same append without), a stall of every NBD and S3
// request of the daemon. It is renamed out of the spares at once
// (journal-drop-<no>.log) and unlinked off the loop; close() waits for that,
// and an open removes a drop file a stop or crash left.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { RecordType, checkJournalDir } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, block, openTestJournal, sparedJournal } from './helpers/journal.js';

const FILE_BYTES = 6 * RECORD_BYTES;
const CAPACITY_BYTES = 4 * FILE_BYTES;
const DESTAGED_SEQ = 20;

/** Entries of `dir` whose name starts with `prefix`. */
function named(dir: string, prefix: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith(prefix));
}

test('a spare dropped for a write\'s room is not unlinked on the event loop; close waits for its unlink', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-spare-drop-');
  await sparedJournal(dir, DESTAGED_SEQ, { fileBytes: FILE_BYTES, capacityBytes: CAPACITY_BYTES });
  // Files far larger than the spares: no rotation takes the one the open's head left.
  const j = openTestJournal(dir, { fileBytes: 64 * FILE_BYTES, capacityBytes: CAPACITY_BYTES, destagedSeq: () => DESTAGED_SEQ, highestDestagedSeq: DESTAGED_SEQ });
  assert.equal(j.spareFiles.length, 1);
  const spareBytes = j.bytesSpare;
  // Before: fs.unlinkSync on the append that needed the spare's room.
  t.mock.method(fs, 'unlinkSync', (p: fs.PathLike) => assert.fail(`unlinkSync(${String(p)}) on the event loop`));
  // The drop file's removal reports 100 ms late (a slow unlink): close() must still wait for it.
  const realRm = fs.rm;
  let dropRemoved = false;
  t.mock.method(fs, 'rm', (p: fs.PathLike, opts: fs.RmOptions, cb: (err: NodeJS.ErrnoException | null) => void) =>
    realRm(p, opts, (err) => {
      if (!path.basename(String(p)).startsWith('journal-drop-')) return cb(err);
      setTimeout(() => {
        dropRemoved = true;
        cb(err);
      }, 100);
    }),
  );
  const writes: Promise<void>[] = [];
  let i = 0;
  while (j.spareFiles.length > 0) {
    assert.ok(i < CAPACITY_BYTES / RECORD_BYTES, 'no write dropped the spare');
    writes.push(j.append(RecordType.Write, 1, (DESTAGED_SEQ + i) * BLOCK_BYTES, BLOCK_BYTES, block(i)));
    i++;
  }
  // At once (the append has not been awaited): no spare left on disk, the room counted free.
  assert.deepEqual(named(dir, 'journal-spare-'), []);
  assert.equal(j.bytesSpare, 0);
  assert.ok(j.bytesLive + spareBytes > CAPACITY_BYTES, 'the last write needed the spare\'s room');
  await Promise.all(writes);
  await j.sync();
  await j.close();
  t.mock.restoreAll();
  assert.ok(dropRemoved, 'close() returned before the dropped spare\'s removal did');
  assert.deepEqual(named(dir, 'journal-drop-'), []);
  const j2 = openTestJournal(dir, { fileBytes: 64 * FILE_BYTES, capacityBytes: CAPACITY_BYTES, destagedSeq: () => DESTAGED_SEQ, highestDestagedSeq: DESTAGED_SEQ });
  assert.equal(j2.extents(1, 0)?.length, i, 'every write replays');
  await j2.close();
});

test('a drop file a stop or crash left (renamed, not yet unlinked) is removed at the next open, never adopted or scanned', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-spare-drop-left-');
  await sparedJournal(dir, DESTAGED_SEQ, { fileBytes: FILE_BYTES, capacityBytes: CAPACITY_BYTES });
  const [spare] = named(dir, 'journal-spare-').sort();
  const left = path.join(dir, spare!.replace('journal-spare-', 'journal-drop-'));
  // What a crash between the rename and the unlink leaves.
  fs.renameSync(path.join(dir, spare!), left);
  assert.deepEqual(checkJournalDir(dir).damaged, []);
  const j = openTestJournal(dir, { fileBytes: FILE_BYTES, capacityBytes: CAPACITY_BYTES, destagedSeq: () => DESTAGED_SEQ, highestDestagedSeq: DESTAGED_SEQ });
  assert.ok(!fs.existsSync(left), 'the drop file was left behind');
  // The other spare was adopted (and taken by the open's head): the drop file was not.
  assert.deepEqual(j.spareFiles, []);
  assert.equal(j.bytesSpare, 0);
  await j.close();
});
