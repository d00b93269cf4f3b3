// syncNewEntry (src/dataplane/dir-sync.ts): a new file's directory is synced
// by path and must still be the directory the file is linked in; a pool
// directory removed, replaced or renamed away after the create, or the file
// removed, fails with PoolOffline instead of reporting the name durable. The
// fsync lands on the directory itself (strace on a child process).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { syncNewEntry } from '../src/dataplane/dir-sync.js';
import { PoolOffline } from '../src/dataplane/errors.js';

/** A pool directory with volumes/ and a file just created in it (by path, as the daemon does). */
function created(t: { after(fn: () => unknown): void }): { root: string; dir: string; file: string; fd: number } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-dirsync-'));
  const dir = path.join(root, 'pool', 'volumes');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, '7.dat');
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  t.after(() => {
    fs.closeSync(fd);
    fs.rmSync(root, { recursive: true, force: true });
  });
  return { root, dir, file, fd };
}

const replaced = (err: unknown) => err instanceof PoolOffline;

test('dir sync: an untouched directory: resolves, the file stays where it was made', async (t) => {
  const c = created(t);
  await syncNewEntry(c.file, c.fd);
  assert.equal(fs.statSync(c.file).ino, fs.fstatSync(c.fd).ino);
});

test('dir sync: the pool directory removed and made again (same path, new directory) after the create: PoolOffline', async (t) => {
  const c = created(t);
  fs.rmSync(path.join(c.root, 'pool'), { recursive: true });
  fs.mkdirSync(c.dir, { recursive: true });
  await assert.rejects(syncNewEntry(c.file, c.fd), (err: Error) => replaced(err) && /was removed or replaced|no longer names/.test(err.message));
});

test('dir sync: the pool directory renamed away and a new one put in its place: PoolOffline (the file lives on in the old one, which nothing reads)', async (t) => {
  const c = created(t);
  fs.renameSync(path.join(c.root, 'pool'), path.join(c.root, 'pool.old'));
  fs.mkdirSync(c.dir, { recursive: true });
  await assert.rejects(syncNewEntry(c.file, c.fd), replaced);
});

test('dir sync: another file put at the name (same directory): PoolOffline', async (t) => {
  const c = created(t);
  fs.rmSync(c.file);
  fs.writeFileSync(c.file, 'someone else');
  await assert.rejects(syncNewEntry(c.file, c.fd), (err: Error) => replaced(err) && /no longer names the file just created/.test(err.message));
});

test('dir sync: the pool directory gone, nothing in its place: PoolOffline, not a raw ENOENT', async (t) => {
  const c = created(t);
  fs.rmSync(c.dir, { recursive: true });
  await assert.rejects(syncNewEntry(c.file, c.fd), (err: Error) => replaced(err) && /is gone/.test(err.message));
});

test('dir sync: fsync is issued on the file\'s directory, opened by its path (strace)', (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-dirsync-strace-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const dir = path.join(root, 'volumes');
  fs.mkdirSync(dir);
  const mod = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/dataplane/dir-sync.js');
  const script = `
    import fs from 'node:fs';
    import { syncNewEntry } from ${JSON.stringify(mod)};
    const fd = fs.openSync(${JSON.stringify(path.join(dir, '9.dat'))}, 'wx');
    await syncNewEntry(${JSON.stringify(path.join(dir, '9.dat'))}, fd);
  `;
  const r = spawnSync('strace', ['-f', '-y', '-e', 'trace=fsync,fdatasync', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  // -y prints each fd's path: exactly one fsync, on the directory.
  const syncs = r.stderr.split('\n').filter((l) => /\bf(data)?sync\(/.test(l) && !l.includes('resumed'));
  assert.equal(syncs.length, 1, r.stderr);
  assert.match(syncs[0]!, new RegExp(`fsync\\(\\d+<${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}>\\) = 0`));
});
