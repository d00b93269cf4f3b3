// A power cut at every step of a run that deletes a spare for a write's room
// (spares count in the journal's capacity: renamed to journal-drop-<no>.log,
// then removed off the event loop, no directory sync): every flushed write is
// replayed, fsck finds no damage, no open refuses, and no drop file or spare
// outlives the next open beyond the bound. Cuts through the open that adopts
// the spares too, through the writes that drop one and through the close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JOURNAL_SPARE_FILES, RecordType, checkJournalDir, type Journal } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { BLOCK_BYTES, RECORD_BYTES, block, openTestJournal } from './helpers/journal.js';
import { PowerLossFs, seededRandom } from './helpers/power-loss-fs.js';

/** The first run's files: three records each, destaged and kept as spares. */
const FILE_BYTES = 3 * RECORD_BYTES;
/** Ten records: with one spare left (three records), the eighth live record needs its room. */
const CAPACITY_BYTES = 10 * RECORD_BYTES;
const FIRST_RUN_WRITES = 8;

test('a power cut at every step of a run that drops a spare for room: every flushed write is replayed, no open refuses', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const plfs = PowerLossFs.install(t);
  const root = tempDir(t, 'couchestor-journal-spare-drop-cut-');
  const dir = path.join(root, 'j');
  fs.mkdirSync(dir);
  const model = plfs.track(dir);
  const rng = seededRandom(7);
  const writes: { seq: number; blockNo: number; flushedAt: number }[] = [];
  const write = async (j: Journal, blockNo: number) => {
    await plfs.pumpUntil(j.append(RecordType.Write, 1, blockNo * BLOCK_BYTES, BLOCK_BYTES, block(blockNo)), rng);
    const w = { seq: j.extents(1, 0)!.at(-1)!.seq, blockNo, flushedAt: Infinity };
    writes.push(w);
    await plfs.pumpUntil(j.sync(), rng);
    w.flushedAt = plfs.mark();
  };
  // First run: written, destaged (index durable before the release), files kept as spares.
  const j0 = openTestJournal(dir, { fileBytes: FILE_BYTES, capacityBytes: CAPACITY_BYTES });
  for (let i = 0; i < FIRST_RUN_WRITES; i++) await write(j0, i);
  j0.release(1, 0, FIRST_RUN_WRITES);
  await plfs.drain(rng);
  t.mock.timers.tick(50);
  await plfs.pumpUntil(j0.close(), rng);
  await plfs.drain(rng);
  assert.equal(fs.readdirSync(dir).filter((n) => n.startsWith('journal-spare-')).length, JOURNAL_SPARE_FILES);
  // Second run: files far larger, so no rotation takes the spare its head left; writes until one needs its room.
  const from = plfs.mark();
  const reopen = (d: string) => openTestJournal(d, { fileBytes: 64 * FILE_BYTES, capacityBytes: CAPACITY_BYTES, destagedSeq: () => FIRST_RUN_WRITES, highestDestagedSeq: FIRST_RUN_WRITES });
  const j1 = reopen(dir);
  assert.equal(j1.spareFiles.length, 1);
  for (let i = 100; i < 109; i++) await write(j1, i);
  assert.deepEqual(j1.spareFiles, [], 'no write dropped the spare');
  t.mock.timers.tick(50);
  await plfs.pumpUntil(j1.close(), rng);
  await plfs.drain(rng);
  const to = plfs.clock;
  const renames = model.ops.filter((o) => o.k === 'rename' && o.to.startsWith('journal-drop-'));
  const unlinks = model.ops.filter((o) => o.k === 'unlink' && o.name.startsWith('journal-drop-'));
  assert.ok(renames.length === 1 && unlinks.length === 1, `the drop is not in the log: ${JSON.stringify(model.ops.filter((o) => o.k !== 'write'))}`);
  let states = 0;
  for (let cut = from; cut <= to; cut++) {
    for (const mode of ['lose', 'keep', 'mixed', 'mixed'] as const) {
      const into = path.join(root, `s-${cut}-${states}`);
      fs.mkdirSync(into);
      model.crashState(cut, seededRandom(cut * 31 + states), into, mode);
      const where = `cut ${cut} (${mode}; files ${fs.readdirSync(into).join(', ')})`;
      assert.deepEqual(checkJournalDir(into).damaged, [], `${where}: fsck calls a power cut damage`);
      let j2: Journal;
      try {
        j2 = reopen(into);
      } catch (err) {
        throw new Error(`${where}: the open refused a power cut: ${(err as Error).message}`, { cause: err });
      }
      const replayed = new Map((j2.extents(1, 0) ?? []).map((e) => [e.seq, e]));
      for (const w of writes) {
        const e = replayed.get(w.seq);
        if (e) assert.ok(e.data!.equals(block(w.blockNo)), `${where}: seq ${w.seq} replayed with other bytes`);
        if (w.flushedAt < cut && w.seq > FIRST_RUN_WRITES) assert.ok(e, `${where}: flushed write seq ${w.seq} lost`);
      }
      for (const s of replayed.keys()) assert.ok(s > FIRST_RUN_WRITES && writes.some((w) => w.seq === s), `${where}: replayed seq ${s}, destaged or never written`);
      await j2.close();
      const left = fs.readdirSync(into);
      assert.deepEqual(left.filter((n) => n.startsWith('journal-drop-')), [], `${where}: a drop file outlived the open`);
      assert.ok(left.filter((n) => n.startsWith('journal-spare-')).length <= JOURNAL_SPARE_FILES, `${where}: spares past the bound`);
      fs.rmSync(into, { recursive: true });
      states++;
    }
  }
  model.untrack();
  t.diagnostic(`${states} crash states over clock ${from}-${to}`);
});
