// Review (journal file names across a power cut): the journal starts a new
// file at every start and whenever the head file fills. Records in it are
// acknowledged as durable by a FLUSH/FUA once their file is fdatasync'd, but
// fdatasync does not make the file's directory entry durable: without an
// fsync of the journal directory a power cut may lose the whole file, and
// every flushed write in it. Checked in process: between the creation of a
// journal file and the end of the first sync() after it, the journal
// directory must have been fsync'd (fs.promises.open and FileHandle.sync,
// how dir-sync.ts syncs a directory, or fs.fsync/fsyncSync on a directory
// descriptor, are wrapped to log it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Journal, RecordType } from '../src/dataplane/journal/journal.js';

const KiB = 1024;
const MiB = 1024 * KiB;

test('a FLUSH after records land in a new journal file (at start, after a rotation) has synced the journal directory', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-journal-dirsync-'));
  const dir = path.join(root, 'journal');
  const realOpenSync = fs.openSync;
  const realPromisesOpen = fs.promises.open;
  const realFsync = fs.fsync;
  const realFsyncSync = fs.fsyncSync;
  const events: string[] = [];
  const isJournalDir = (p: string) => path.resolve(p) === path.resolve(dir);
  const fdPath = (fd: number) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return '';
    }
  };
  fs.openSync = ((p: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode | null) => {
    const fd = realOpenSync(p, flags ?? 'r', mode);
    if (typeof flags === 'number' && (flags & fs.constants.O_CREAT) !== 0 && path.dirname(String(p)) === dir) events.push(`create ${path.basename(String(p))}`);
    return fd;
  }) as typeof fs.openSync;
  fs.promises.open = (async (p: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
    const fh = await realPromisesOpen(p, flags, mode);
    if (isJournalDir(String(p))) {
      const sync = fh.sync.bind(fh);
      fh.sync = async () => {
        await sync();
        events.push('dirsync');
      };
    }
    return fh;
  }) as typeof fs.promises.open;
  fs.fsync = ((fd: number, cb: fs.NoParamCallback) =>
    realFsync(fd, (err) => {
      if (!err && isJournalDir(fdPath(fd))) events.push('dirsync');
      cb(err);
    })) as typeof fs.fsync;
  fs.fsyncSync = ((fd: number) => {
    realFsyncSync(fd);
    if (isJournalDir(fdPath(fd))) events.push('dirsync');
  }) as typeof fs.fsyncSync;
  let j: Journal | null = null;
  t.after(async () => {
    fs.openSync = realOpenSync;
    fs.promises.open = realPromisesOpen;
    fs.fsync = realFsync;
    fs.fsyncSync = realFsyncSync;
    await j?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  // 64 KiB files: a few 16 KiB records fill one.
  j = Journal.open({ dir, chunkSizeBytes: MiB, fileBytes: 64 * KiB, destagedSeq: () => 0, volumeExists: () => true });
  const record = Buffer.alloc(16 * KiB, 0x6a);
  let rotations = 0;
  for (let i = 0; i < 12; i++) {
    const createdBefore = events.filter((e) => e.startsWith('create')).length;
    await j.append(RecordType.Write, 1, i * record.length, record.length, record);
    await j.sync(); // the FLUSH
    const created = events.filter((e) => e.startsWith('create')).length;
    if (created > createdBefore) rotations++;
    const lastCreate = events.map((e) => e.startsWith('create')).lastIndexOf(true);
    assert.ok(
      events.slice(lastCreate + 1).includes('dirsync'),
      `FLUSH ${i} succeeded with ${events[lastCreate]} not synced into its directory: ${events.join(', ')}`,
    );
  }
  assert.ok(rotations >= 2, `only ${rotations} rotations`);
});
