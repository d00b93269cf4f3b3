// Review of 7838103: Journal.open scans every journal file before it opens
// any (judgeJournal needs them all). The scans must not hold the payloads of
// every record on disk: files are removed only once all their records are
// destaged, so the files can hold far more dead bytes than the journal's
// capacity of live ones. Checked in process: with six 2 MiB files whose
// records are all destaged, the memory held (array buffers, after a GC)
// when each file is read stays below two files' worth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Journal, RecordType } from '../src/dataplane/journal/journal.js';

const MiB = 1024 * 1024;
const FILE_BYTES = 2 * MiB;
const RECORD_DATA_BYTES = 64 * 1024;

test('opening a journal whose files hold only destaged records does not hold their payloads all at once', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-journal-open-memory-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const j0 = Journal.open({ dir, chunkSizeBytes: MiB, fileBytes: FILE_BYTES, capacityBytes: 64 * MiB, destagedSeq: () => 0, volumeExists: () => true });
  // About six files of 64 KiB writes.
  for (let i = 0; i < 6 * 31; i++) await j0.append(RecordType.Write, 1, (i % 16) * RECORD_DATA_BYTES, RECORD_DATA_BYTES, Buffer.alloc(RECORD_DATA_BYTES, i & 0xff));
  await j0.sync();
  await j0.close();
  const logs = fs.readdirSync(dir).filter((n) => n.endsWith('.log'));
  assert.ok(logs.length >= 6, `${logs.length} files`);
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const held = () => {
    gc();
    return process.memoryUsage().arrayBuffers;
  };
  const realRead = fs.readFileSync;
  const samples: number[] = [];
  const baseline = held();
  fs.readFileSync = ((...args: Parameters<typeof fs.readFileSync>) => {
    if (String(args[0]).startsWith(dir)) samples.push(held() - baseline);
    return realRead(...args);
  }) as typeof fs.readFileSync;
  let j: Journal;
  try {
    // Every record destaged: nothing is replayed.
    j = Journal.open({ dir, chunkSizeBytes: MiB, fileBytes: FILE_BYTES, capacityBytes: 64 * MiB, destagedSeq: () => Number.MAX_SAFE_INTEGER, volumeExists: () => true });
  } finally {
    fs.readFileSync = realRead;
  }
  t.after(() => j.close());
  assert.equal(j.dirtyVolumes().length, 0);
  assert.ok(samples.length >= 6, `${samples.length} reads`);
  // Growth from the first read on (what the writing journal left in memory is in the baseline).
  const grownBytes = Math.max(...samples) - samples[0]!;
  assert.ok(grownBytes < 2 * FILE_BYTES, `${(grownBytes / MiB).toFixed(1)} MiB more held by the last file read than by the first (samples ${samples.map((s) => (s / MiB).toFixed(1)).join(', ')} MiB)`);
});
