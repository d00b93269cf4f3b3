// The downgrade guard: every journal open makes a directory named as journal
// file 0 (journal-0000000000.log). Builds before nonces in file names
// (7e96923) do not see the files named since, so rolled back they would
// start without replaying their writes; they list the guard as a journal
// file and fail reading it (EISDIR) before changing anything. This build
// never takes it for a file: open, replay, fsck and salvage work beside it.
// (The old build itself was checked by hand: 7e96923~1 built in a worktree,
// its Journal.open and checkJournalDir on a directory this build wrote throw
// EISDIR and leave every entry as it was.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JOURNAL_DOWNGRADE_GUARD, JOURNAL_DOWNGRADE_GUARD_LABEL, RecordType, checkJournalDir, salvageJournalDir } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, block, journalFiles, openTestJournal } from './helpers/journal.js';

/** How builds before 7e96923 name and list journal files (their FILE_RE). */
const LEGACY_FILE_RE = /^journal-(\d{10})\.log$/;

test('every open makes the guard directory, which an older build lists as a journal file and cannot read, and this build ignores', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-guard-');
  const j = openTestJournal(dir);
  await j.append(RecordType.Write, 1, 0, BLOCK_BYTES, block(0));
  await j.sync();
  await j.close();
  const guard = path.join(dir, JOURNAL_DOWNGRADE_GUARD);
  // Before: no such entry, so an older build listed only its own names (none here) and started empty.
  assert.ok(fs.statSync(guard).isDirectory(), 'the guard directory exists');
  // What an older build does with the directory: listed first (number 0) and read like a file.
  const legacyListed = fs.readdirSync(dir).filter((n) => LEGACY_FILE_RE.test(n)).sort();
  assert.deepEqual(legacyListed, [JOURNAL_DOWNGRADE_GUARD]);
  assert.throws(() => fs.readFileSync(guard), { code: 'EISDIR' });
  // This build: no journal file, fsck and salvage pass it over, the write replays.
  assert.ok(!journalFiles(dir).includes(guard));
  assert.deepEqual(checkJournalDir(dir), { filesScanned: 1, recordsScanned: 1, tornTails: 0, damaged: [] });
  assert.equal(salvageJournalDir(dir).filesRewritten, 0);
  const j2 = openTestJournal(dir);
  t.after(() => j2.close());
  assert.ok(j2.extents(1, 0)?.[0]?.data?.equals(block(0)), 'the write replays beside the guard');
  assert.ok(fs.statSync(guard).isDirectory(), 'a second open keeps it');
});

test('an entry named as the guard that is not a directory (no build writes one) is refused, and nothing is changed', (t) => {
  const dir = tempDir(t, 'couchestor-journal-guard-file-');
  fs.writeFileSync(path.join(dir, JOURNAL_DOWNGRADE_GUARD), 'not ours');
  const before = fs.readdirSync(dir).sort();
  assert.throws(() => openTestJournal(dir), /is not a directory/);
  assert.deepEqual(fs.readdirSync(dir).sort(), before, 'the refusal created a file');
});

test('the guard is not empty: it holds an empty file whose name says what it is (copy tools that skip empty directories keep it), added to a guard made before', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-guard-label-');
  const guard = path.join(dir, JOURNAL_DOWNGRADE_GUARD);
  await openTestJournal(dir).close();
  assert.deepEqual(fs.readdirSync(guard), [JOURNAL_DOWNGRADE_GUARD_LABEL]);
  assert.match(JOURNAL_DOWNGRADE_GUARD_LABEL, /NOT-A-JOURNAL-FILE.*README/);
  const label = path.join(guard, JOURNAL_DOWNGRADE_GUARD_LABEL);
  assert.equal(fs.statSync(label).size, 0, 'empty: an open asks a full file system for no data block');
  // A guard an earlier build of this series left empty gets its label at the next open.
  fs.rmSync(label);
  await openTestJournal(dir).close();
  assert.deepEqual(fs.readdirSync(guard), [JOURNAL_DOWNGRADE_GUARD_LABEL]);
  // An older build still fails on it (a directory, whatever it holds).
  assert.throws(() => fs.readFileSync(guard), { code: 'EISDIR' });
});
