// Every name a FLUSH depends on is durable before the FLUSH succeeds: a new
// volume file's entry in volumes/, volumes/ in its pool, the pool directory,
// the data directory's meta/ and LMDB's data.mdb, the journal directory.
// fdatasync covers none of them (POSIX: only an fsync of the parent makes a
// new name durable). Checked in process on an event log: fs.mkdirSync,
// fs.openSync with O_CREAT, and every fsync of a directory (fs.fsyncSync,
// fs.fsync, FileHandle.sync from fs.promises.open) are wrapped; named imports
// of node:fs see the wrappers through syncBuiltinESMExports. For each entry
// created, its parent directory must have been fsynced after the create and
// before the FLUSH's success.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { Journal, RecordType } from '../src/dataplane/journal/journal.js';
import { Pool } from '../src/dataplane/pools/pool.js';
import { prepareHotPool } from '../src/dataplane/objects/hot-segments.js';
import { writeVolume } from './helpers/volume.js';
import { ensureDurableDir } from '../src/dataplane/dir-sync.js';
import { SegmentStore } from '../src/dataplane/ec/segment-store.js';
import { encodeShardRecord } from '../src/dataplane/ec/shard-record.js';

const MiB = 1024 * 1024;

type Event = { kind: 'create' | 'dirsync' | 'mark'; path: string };

/** Wraps the fs calls that create names or sync directories; `restore` undoes it. */
function recordEvents(root: string): { events: Event[]; mark(label: string): void; restore(): void } {
  const events: Event[] = [];
  const under = (p: string) => p === root || p.startsWith(root + path.sep);
  const fdPath = (fd: number) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return '';
    }
  };
  const isDirFd = (fd: number) => {
    try {
      return fs.fstatSync(fd).isDirectory();
    } catch {
      return false;
    }
  };
  const real = { mkdirSync: fs.mkdirSync, openSync: fs.openSync, fsyncSync: fs.fsyncSync, fsync: fs.fsync, promisesOpen: fs.promises.open };
  fs.mkdirSync = ((p: fs.PathLike, opts?: fs.MakeDirectoryOptions | fs.Mode | null) => {
    const abs = path.resolve(String(p));
    // Every level a recursive mkdir makes: those missing before the call.
    const missing: string[] = [];
    for (let d = abs; !fs.existsSync(d); d = path.dirname(d)) missing.unshift(d);
    const r = real.mkdirSync(p, opts as fs.MakeDirectoryOptions);
    for (const d of missing) if (under(d)) events.push({ kind: 'create', path: d });
    return r;
  }) as typeof fs.mkdirSync;
  fs.openSync = ((p: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode | null) => {
    const abs = path.resolve(String(p));
    const existed = fs.existsSync(abs);
    const fd = real.openSync(p, flags ?? 'r', mode);
    const creates = typeof flags === 'number' ? (flags & fs.constants.O_CREAT) !== 0 : typeof flags === 'string' && /[wax]/.test(flags);
    if (creates && !existed && under(abs)) events.push({ kind: 'create', path: abs });
    return fd;
  }) as typeof fs.openSync;
  fs.fsyncSync = ((fd: number) => {
    real.fsyncSync(fd);
    if (isDirFd(fd)) events.push({ kind: 'dirsync', path: fdPath(fd) });
  }) as typeof fs.fsyncSync;
  fs.fsync = ((fd: number, cb: fs.NoParamCallback) => {
    const dir = isDirFd(fd) ? fdPath(fd) : null;
    real.fsync(fd, (err) => {
      if (!err && dir !== null) events.push({ kind: 'dirsync', path: dir });
      cb(err);
    });
  }) as typeof fs.fsync;
  fs.promises.open = (async (p: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
    const fh = await real.promisesOpen(p, flags, mode);
    if (isDirFd(fh.fd)) {
      const dir = fdPath(fh.fd);
      const sync = fh.sync.bind(fh);
      fh.sync = async () => {
        await sync();
        events.push({ kind: 'dirsync', path: dir });
      };
    }
    return fh;
  }) as typeof fs.promises.open;
  syncBuiltinESMExports();
  return {
    events,
    mark: (label) => events.push({ kind: 'mark', path: label }),
    restore: () => {
      fs.mkdirSync = real.mkdirSync;
      fs.openSync = real.openSync;
      fs.fsyncSync = real.fsyncSync;
      fs.fsync = real.fsync;
      fs.promises.open = real.promisesOpen;
      syncBuiltinESMExports();
    },
  };
}

/** Entries created before `mark` whose parent was not fsynced between their create and the mark. */
function unsyncedBefore(events: Event[], mark: string): string[] {
  const end = events.findIndex((e) => e.kind === 'mark' && e.path === mark);
  assert.ok(end >= 0, `no mark ${mark}`);
  const out: string[] = [];
  events.slice(0, end).forEach((e, i) => {
    if (e.kind !== 'create') return;
    const parent = path.dirname(e.path);
    if (!events.slice(i + 1, end).some((s) => s.kind === 'dirsync' && s.path === parent)) out.push(e.path);
  });
  return out;
}

function tempRoot(t: { after(fn: () => unknown): void }, name: string): string {
  // realpath: /proc/self/fd names the real path, so compare real paths.
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), `couchestor-${name}-`)));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  return root;
}

test('first FLUSH of a new volume: the data directory, meta/, the pool directory, volumes/ and the volume file are all synced into their parents before it succeeds', async (t) => {
  const root = tempRoot(t, 'dirsync-flush');
  const rec = recordEvents(root);
  let m: VolumeManager | null = null;
  t.after(async () => {
    rec.restore();
    await m?.close();
  });
  const dataDir = path.join(root, 'data');
  m = VolumeManager.open(dataDir);
  await m.putPool({ name: 'hot-0', path: path.join(dataDir, 'pools', 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: {} });
  await m.createVolume({ name: 'v1', sizeBytes: 8 * MiB });
  const vol = m.openVolume('v1');
  const data = Buffer.alloc(64 * 1024, 0x5a);
  await writeVolume(vol, 0, data);
  await vol.flush();
  rec.mark('flush 1 ok');

  const volFile = path.join(dataDir, 'pools', 'hot-0', 'volumes', `${m.getVolumeRecord('v1')!.id}.dat`);
  const created = rec.events.filter((e) => e.kind === 'create').map((e) => e.path);
  // The log saw what it must judge: otherwise an empty log would pass.
  for (const p of [dataDir, path.join(dataDir, 'meta'), path.join(dataDir, 'pools'), path.join(dataDir, 'pools', 'hot-0'), path.dirname(volFile), volFile]) {
    assert.ok(created.includes(p), `the log has no create of ${p}: ${JSON.stringify(created)}`);
  }
  assert.deepEqual(unsyncedBefore(rec.events, 'flush 1 ok'), [], 'a FLUSH succeeded while these new names were never synced into their directory');
  // LMDB makes data.mdb itself (no fs.openSync): meta/ synced after the store opened, before the FLUSH.
  const metaSync = rec.events.findIndex((e) => e.kind === 'dirsync' && e.path === path.join(dataDir, 'meta'));
  assert.ok(metaSync >= 0 && metaSync < rec.events.findIndex((e) => e.kind === 'mark'), 'meta/ (data.mdb) never synced before the FLUSH');
  assert.ok(fs.existsSync(path.join(dataDir, 'meta', 'data.mdb')));

  // Once per file, not per I/O: a second write + FLUSH syncs no directory.
  const before = rec.events.length;
  await writeVolume(vol, 128 * 1024, data);
  await vol.flush();
  assert.deepEqual(rec.events.slice(before).filter((e) => e.kind === 'dirsync'), [], 'a FLUSH on a volume whose names are durable synced a directory again');
});

test('a volume file missing at open (lost outside the daemon) is made again and synced into volumes/ before the first FLUSH succeeds', async (t) => {
  const root = tempRoot(t, 'dirsync-recreate');
  const dataDir = path.join(root, 'data');
  let m: VolumeManager | null = VolumeManager.open(dataDir);
  await m.putPool({ name: 'hot-0', path: path.join(dataDir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: {} });
  const v = await m.createVolume({ name: 'v1', sizeBytes: 8 * MiB });
  await m.close();
  const volFile = path.join(dataDir, 'hot-0', 'volumes', `${v.id}.dat`);
  // force: before createVolume made the file, only the first open did.
  fs.rmSync(volFile, { force: true });
  const rec = recordEvents(root);
  t.after(async () => {
    rec.restore();
    await m?.close();
  });
  m = VolumeManager.open(dataDir);
  const vol = m.openVolume('v1');
  await writeVolume(vol, 0, Buffer.alloc(4096, 0x33));
  await vol.flush();
  rec.mark('flush ok');
  assert.deepEqual(rec.events.filter((e) => e.kind === 'create').map((e) => e.path), [volFile]);
  assert.deepEqual(unsyncedBefore(rec.events, 'flush ok'), []);
});

test('journal: its directory, made at open, is synced into the pool directory before the first FLUSH of a record succeeds', async (t) => {
  const root = tempRoot(t, 'dirsync-journal');
  const dir = path.join(root, 'hot-0', 'journal');
  fs.mkdirSync(path.dirname(dir));
  const rec = recordEvents(root);
  let j: Journal | null = null;
  t.after(async () => {
    rec.restore();
    await j?.close();
  });
  j = Journal.open({ dir, chunkSizeBytes: MiB, destagedSeq: () => 0, volumeExists: () => true });
  await j.append(RecordType.Write, 1, 0, 4096, Buffer.alloc(4096, 0x11));
  await j.sync();
  rec.mark('flush ok');
  const created = rec.events.filter((e) => e.kind === 'create').map((e) => e.path);
  assert.ok(created.includes(dir) && created.some((p) => path.dirname(p) === dir), `log: ${JSON.stringify(created)}`);
  assert.deepEqual(unsyncedBefore(rec.events, 'flush ok'), []);
});

test('hot objects: objects/ and its fan-out directories are synced into their parents before prepareHotPool returns (before any PUT)', async (t) => {
  const root = tempRoot(t, 'dirsync-objects');
  fs.mkdirSync(path.join(root, 'hot-0'));
  const rec = recordEvents(root);
  t.after(() => rec.restore());
  prepareHotPool(new Pool({ name: 'hot-0', path: path.join(root, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: {} }));
  rec.mark('ready');
  assert.equal(rec.events.filter((e) => e.kind === 'create').length, 257);
  assert.deepEqual(unsyncedBefore(rec.events, 'ready'), []);
});

test('ensureDurableDir: a directory that existed is synced into its parent once per process, through a symlink into its real parent; a new one at every create', async (t) => {
  const root = tempRoot(t, 'dirsync-existing');
  const real = path.join(root, 'disk', 'pool');
  fs.mkdirSync(real, { recursive: true });
  fs.symlinkSync(real, path.join(root, 'link'));
  const rec = recordEvents(root);
  t.after(() => rec.restore());
  ensureDurableDir(path.join(root, 'link'));
  ensureDurableDir(path.join(root, 'link'));
  ensureDurableDir(real);
  // One sync, of the real parent (the symlink's own directory holds no name that matters here).
  assert.deepEqual(rec.events, [{ kind: 'dirsync', path: path.join(root, 'disk') }]);
  // Replaced under the same path (a new inode): synced again.
  fs.rmSync(real, { recursive: true });
  fs.mkdirSync(real);
  ensureDurableDir(path.join(root, 'link'));
  assert.deepEqual(rec.events.slice(1), [{ kind: 'create', path: real }, { kind: 'dirsync', path: path.join(root, 'disk') }]);
  // Made by the call, two levels: each synced into its parent.
  ensureDurableDir(path.join(root, 'link', 'a', 'b'));
  assert.deepEqual(rec.events.slice(3), [
    { kind: 'create', path: path.join(root, 'link', 'a') },
    { kind: 'create', path: path.join(root, 'link', 'a', 'b') },
    { kind: 'dirsync', path: real },
    { kind: 'dirsync', path: path.join(real, 'a') },
  ]);
});

test('cold segments: a pool directory made while the daemon runs (a replaced cold pool) is synced into its parent before the first shard record is acknowledged', async (t) => {
  const root = tempRoot(t, 'dirsync-segments');
  fs.mkdirSync(path.join(root, 'pools'));
  const rec = recordEvents(root);
  let store: SegmentStore | null = null;
  t.after(async () => {
    rec.restore();
    await store?.close();
  });
  // The operator's mkdir of the replacement pool, then the store's segments/.
  const segDir = path.join(root, 'pools', 'cold-2', 'segments');
  fs.mkdirSync(segDir, { recursive: true });
  store = await SegmentStore.open(segDir, { createdDir: true });
  const record = encodeShardRecord({ ownerId: Buffer.alloc(16, 7), chunkIndex: 1, stripeGeneration: 1, shardIndex: 0, dataShards: 4, parityShards: 2 }, Buffer.alloc(4096, 1));
  await store.append([record]);
  rec.mark('append ok');
  const created = rec.events.filter((e) => e.kind === 'create').map((e) => e.path);
  assert.ok(created.includes(path.join(root, 'pools', 'cold-2')) && created.includes(segDir), `log: ${JSON.stringify(created)}`);
  assert.deepEqual(unsyncedBefore(rec.events, 'append ok'), []);
});
