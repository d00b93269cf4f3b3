// Journal file recycling (JOURNAL_SPARE_FILES): a destaged file is kept as a
// spare and a later rotation overwrites it from offset 0, so its old items
// (valid CRCs, the old nonce) lie past the new end. They must be what zeros
// past the end are (no items, no damage that refuses an open), also when the
// files after a recycled one are destaged and gone (a gap in the numbers),
// while real damage to a flushed record before later items is still
// refused; and a power cut at any step of a recycle (the rename to a spare,
// its directory sync, the reuse's rename, the first writes) keeps every
// flushed write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JournalCorrupt, JOURNAL_HEADER_BYTES, JOURNAL_SPARE_FILES, RecordType, checkJournalDir, scanJournalBytes, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, block, flipBit, journalFiles, openTestJournal } from './helpers/journal.js';
import { PowerLossFs, seededRandom } from './helpers/power-loss-fs.js';

/** Two 4 KiB records (and the fence) per file: a rotation every second write. */
const FILE_BYTES = 3 * RECORD_BYTES;

function spares(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((n) => n.startsWith('journal-spare-'))
    .sort();
}

/** Writes blocks `from`..`to - 1` of volume 1 (seq order), each flushed. */
async function writeFlushed(j: Journal, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    await j.append(RecordType.Write, 1, i * BLOCK_BYTES, BLOCK_BYTES, block(i));
    await j.sync();
  }
}

/** The old items (another nonce) a recycled file holds past its scanned end. */
function staleItemsPastEnd(file: string): number {
  const bytes = fs.readFileSync(file);
  const scan = scanJournalFile(file);
  return scanJournalBytes(bytes.subarray(scan.endBytes), null).records.length;
}

/** Seqs the first run (sparedJournal) wrote and destaged. */
const DESTAGED_SEQ = 20;

/**
 * A journal whose first run wrote blocks 0-19 (seqs 1-20) in files of five
 * records, all destaged (released), so that two of its files are spares
 * now, larger than what the next run's smaller files write over them.
 */
async function sparedJournal(dir: string): Promise<void> {
  const j0 = openTestJournal(dir, { fileBytes: 6 * RECORD_BYTES });
  await writeFlushed(j0, 0, DESTAGED_SEQ);
  j0.release(1, 0, DESTAGED_SEQ);
  await j0.close();
  assert.equal(spares(dir).length, JOURNAL_SPARE_FILES, `destaged files kept as spares: ${fs.readdirSync(dir).join(', ')}`);
}

function reopen(dir: string, fileBytes = FILE_BYTES): Journal {
  return openTestJournal(dir, { fileBytes, destagedSeq: () => DESTAGED_SEQ, highestDestagedSeq: DESTAGED_SEQ });
}

/**
 * sparedJournal, then reopened (the open's head takes a spare) and written
 * again: blocks 20-22 (seqs 21-23), over the old records.
 */
async function recycledJournal(dir: string): Promise<void> {
  await sparedJournal(dir);
  const j1 = reopen(dir);
  assert.equal(j1.spareFiles.length, JOURNAL_SPARE_FILES - 1, 'the open\'s head did not take a spare');
  await writeFlushed(j1, 20, 23);
  await j1.close();
}

test('a recycled file with old items past its new end: the open replays exactly the new records, fsck finds nothing', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-recycle-');
  await recycledJournal(dir);
  const withStale = journalFiles(dir).filter((f) => staleItemsPastEnd(f) > 0);
  assert.ok(withStale.length >= 2, `no file holds old items past its end: ${fs.readdirSync(dir).join(', ')}`);
  assert.deepEqual(checkJournalDir(dir).damaged, []);
  const j = reopen(dir);
  t.after(() => j.close());
  const ext = j.extents(1, 0) ?? [];
  assert.deepEqual(
    ext.map((e) => e.offsetBytes / BLOCK_BYTES),
    [20, 21, 22],
    'replayed extents are not exactly the new writes',
  );
  for (const e of ext) assert.ok(e.data!.equals(block(e.offsetBytes / BLOCK_BYTES)));
  assert.deepEqual(ext.map((e) => e.seq), [21, 22, 23]);
});

test('a recycled file whose later files are destaged and gone (a gap in the numbers): its old items are no torn tail the open refuses', async (t) => {
  const dir = tempDir(t, 'couchestor-journal-recycle-gap-');
  await sparedJournal(dir);
  // Blocks 40-49 (seqs 21-30): the open and the first rotation reuse both spares (old items past their ends), then new files.
  const j0 = reopen(dir);
  await writeFlushed(j0, 40, 50);
  await j0.close();
  const files = journalFiles(dir);
  const stale = files.filter((f) => staleItemsPastEnd(f) > 0);
  assert.ok(stale.length >= 1, 'no recycled file');
  // Remove a file after the first recycled one, as a destage would have (all its records destaged).
  const first = stale[0]!;
  const i = files.indexOf(first);
  const gone = files[i + 1]!;
  const goneSeqs = scanJournalFile(gone).records.map((r) => r.rec.seq);
  assert.ok(goneSeqs.length > 0);
  fs.rmSync(gone);
  const destaged = new Set(goneSeqs);
  assert.deepEqual(checkJournalDir(dir).damaged, [], 'fsck calls a recycled file\'s old items damage');
  // The removed file's records are in the stripe (destaged): not in any file any more.
  const j = reopen(dir);
  t.after(() => j.close());
  const replayed = (j.extents(1, 0) ?? []).map((e) => e.seq);
  assert.deepEqual(replayed, Array.from({ length: 10 }, (_, k) => DESTAGED_SEQ + 1 + k).filter((s) => !destaged.has(s)));
});

test('a torn write in a recycled file: unflushed, it is cut and the old items after it are not taken; flushed and damaged with a later item, the open refuses', async (t) => {
  for (const flushed of [false, true]) {
    const dir = tempDir(t, `couchestor-journal-recycle-torn-${flushed}-`);
    await sparedJournal(dir);
    const j1 = reopen(dir, 4 * RECORD_BYTES);
    // The head is a spare: seqs 21-23 in it, over the old records.
    await j1.append(RecordType.Write, 1, 30 * BLOCK_BYTES, BLOCK_BYTES, block(30));
    await j1.sync();
    await j1.append(RecordType.Write, 1, 31 * BLOCK_BYTES, BLOCK_BYTES, block(31));
    await j1.append(RecordType.Write, 1, 32 * BLOCK_BYTES, BLOCK_BYTES, block(32));
    if (flushed) await j1.sync();
    await j1.close();
    const head = journalFiles(dir).at(-1)!;
    assert.ok(staleItemsPastEnd(head) > 0, 'the head is not a recycled file');
    const scan = scanJournalFile(head);
    const second = scan.records.find((r) => r.rec.seq === DESTAGED_SEQ + 2)!;
    if (!flushed) {
      // The crash: seq 22's writev landed only in part (its second half is the old file's bytes), seq 23's landed.
      const fd = fs.openSync(head, 'r+');
      const old = Buffer.alloc(RECORD_BYTES / 2, 0x5a);
      fs.writeSync(fd, old, 0, old.length, second.posBytes + RECORD_BYTES / 2);
      fs.closeSync(fd);
      assert.deepEqual(checkJournalDir(dir).damaged, []);
      const j = reopen(dir);
      t.after(() => j.close());
      assert.deepEqual((j.extents(1, 0) ?? []).map((e) => e.seq), [DESTAGED_SEQ + 1], 'the crash cut is not cut where it begins');
      assert.ok(fs.statSync(head).size === second.posBytes, 'the cut did not truncate the file there');
    } else {
      flipBit(head, second.posBytes + JOURNAL_HEADER_BYTES + 7);
      assert.equal(checkJournalDir(dir).damaged.length, 1, 'fsck misses damage to a flushed record in a recycled file');
      assert.throws(() => reopen(dir), JournalCorrupt);
    }
  }
});

test('a power cut at every step of recycling (rename to a spare, its directory sync, reuse by a rotation, the first writes): every flushed write is replayed, no open refuses', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const plfs = PowerLossFs.install(t);
  const root = tempDir(t, 'couchestor-journal-recycle-cut-');
  const dir = path.join(root, 'j');
  fs.mkdirSync(dir);
  const model = plfs.track(dir);
  const rng = seededRandom(42);
  const writes: { seq: number; blockNo: number; flushedAt: number }[] = [];
  let releasedAt = Infinity;
  const j = openTestJournal(dir, { fileBytes: FILE_BYTES });
  const write = async (blockNo: number) => {
    await plfs.pumpUntil(j.append(RecordType.Write, 1, blockNo * BLOCK_BYTES, BLOCK_BYTES, block(blockNo)), rng);
    const seq = j.extents(1, 0)!.at(-1)!.seq;
    const w = { seq, blockNo, flushedAt: Infinity };
    writes.push(w);
    await plfs.pumpUntil(j.sync(), rng);
    w.flushedAt = plfs.mark();
  };
  for (let i = 0; i < 8; i++) await write(i);
  const from = plfs.mark();
  j.release(1, 0, 8);
  releasedAt = plfs.mark();
  await plfs.drain(rng);
  for (let i = 100; i < 108; i++) await write(i);
  t.mock.timers.tick(50);
  await plfs.pumpUntil(j.close(), rng);
  await plfs.drain(rng);
  const to = plfs.clock;
  const renames = model.ops.filter((o) => o.k === 'rename');
  assert.ok(renames.some((o) => o.to.startsWith('journal-spare-')) && renames.some((o) => o.from.startsWith('journal-spare-')), `no recycle in the log: ${JSON.stringify(renames)}`);
  let states = 0;
  let renamesUndone = 0;
  for (let cut = from; cut <= to; cut++) {
    for (const mode of ['lose', 'keep', 'mixed', 'mixed'] as const) {
      const into = path.join(root, `s-${cut}-${states}`);
      fs.mkdirSync(into);
      const stats = model.crashState(cut, seededRandom(cut * 31 + states), into, mode);
      renamesUndone += stats.renamesUndone;
      const where = `cut ${cut} (${mode}; files ${fs.readdirSync(into).join(', ')})`;
      assert.deepEqual(checkJournalDir(into).damaged, [], `${where}: fsck calls a power cut damage`);
      const destagedSeq = cut > releasedAt ? 8 : 0;
      let j2: Journal;
      try {
        j2 = openTestJournal(into, { fileBytes: FILE_BYTES, destagedSeq: () => destagedSeq, highestDestagedSeq: destagedSeq });
      } catch (err) {
        throw new Error(`${where}: the open refused a power cut: ${(err as Error).message}`, { cause: err });
      }
      const replayed = new Map((j2.extents(1, 0) ?? []).map((e) => [e.seq, e]));
      for (const w of writes) {
        const e = replayed.get(w.seq);
        if (e) assert.ok(e.data!.equals(block(w.blockNo)) && e.offsetBytes === w.blockNo * BLOCK_BYTES, `${where}: seq ${w.seq} replayed with other bytes`);
        if (w.flushedAt < cut && w.seq > destagedSeq) assert.ok(e, `${where}: flushed write seq ${w.seq} lost`);
      }
      for (const s of replayed.keys()) assert.ok(writes.some((w) => w.seq === s && s > destagedSeq), `${where}: replayed seq ${s}, destaged or never written`);
      await j2.close();
      fs.rmSync(into, { recursive: true });
      states++;
    }
  }
  model.untrack();
  t.diagnostic(`${states} crash states over clock ${from}-${to}, ${renames.length} renames logged, ${renamesUndone} undone`);
  assert.ok(renamesUndone > 0, 'no crash state undid a rename');
});
