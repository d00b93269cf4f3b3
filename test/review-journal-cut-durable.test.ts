// Review of 7838103 (crash cuts in the middle of a journal file): the cut that
// Journal.open makes (ftruncate) must be durable before the journal takes new
// writes, and new writes must be numbered above every record the cut dropped.
// Otherwise a power cut after the restart can bring the dropped, never
// flushed records back (the truncation was only in the page cache) with the
// seqs of newer flushed records: the next open then sees flushed writes'
// seqs claimed by markers after damage and refuses to start, and salvage
// would replay the stale records as if they were new.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Journal, RecordType } from '../src/dataplane/journal/journal.js';
import { crashCutJournal } from './helpers/journal.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 4096;

function openJournal(dir: string): Journal {
  return Journal.open({ dir, chunkSizeBytes: MiB, destagedSeq: () => 0, volumeExists: () => true });
}


test('a crash cut made at open is synced before open returns', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-cut-durable-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = await crashCutJournal(openJournal(dir));
  const events: string[] = [];
  const name = (fd: number) => {
    try {
      return path.basename(fs.readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      return '?';
    }
  };
  const real = { ftruncateSync: fs.ftruncateSync, fsyncSync: fs.fsyncSync, fdatasyncSync: fs.fdatasyncSync };
  fs.ftruncateSync = ((fd: number, len?: number) => {
    real.ftruncateSync(fd, len);
    events.push(`truncate ${name(fd)}`);
  }) as typeof fs.ftruncateSync;
  fs.fsyncSync = ((fd: number) => {
    real.fsyncSync(fd);
    events.push(`sync ${name(fd)}`);
  }) as typeof fs.fsyncSync;
  fs.fdatasyncSync = ((fd: number) => {
    real.fdatasyncSync(fd);
    events.push(`sync ${name(fd)}`);
  }) as typeof fs.fdatasyncSync;
  let j: Journal;
  try {
    j = openJournal(dir);
  } finally {
    Object.assign(fs, real);
  }
  t.after(() => j.close());
  const base = path.basename(file);
  const cutAt = events.indexOf(`truncate ${base}`);
  assert.ok(cutAt >= 0, `the crash cut was not made: ${JSON.stringify(events)}`);
  assert.ok(events.indexOf(`sync ${base}`, cutAt + 1) > cutAt, `the cut of ${base} was never synced before open returned: ${JSON.stringify(events)}`);
});

test('writes after a crash cut are numbered above every record the cut dropped', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-cut-seq-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  await crashCutJournal(openJournal(dir));
  const j = openJournal(dir);
  t.after(() => j.close());
  assert.deepEqual((j.extents(1, 0) ?? []).map((e) => e.seq), [1, 2], 'the cut did not drop seqs 3 and 4');
  await j.append(RecordType.Write, 1, 5 * BLOCK_BYTES, BLOCK_BYTES, Buffer.alloc(BLOCK_BYTES, 0x15));
  const seq = j.extents(1, 0)!.at(-1)!.seq;
  assert.ok(seq > 4, `the new write reused seq ${seq} of a record the cut dropped (seq 4 was on disk)`);
});
