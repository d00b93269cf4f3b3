// Makes a just-created file's name durable: fsync of its parent directory,
// opened by path, then a check that the directory synced is the one the file
// is linked in (a pool directory replaced meanwhile fails the call).
//
// By path, not on a directory fd held for the store's lifetime. Node has no
// openat(): files are created by path, so they land in whatever directory the
// path names at that instant. A held fd pins the directory as it was at
// start; once an operator replaces the pool directory (a lost pool swapped
// for a new one, which `couchestor rebuild` expects for cold pools) fsync on
// that fd still succeeds (measured: a removed directory's fd, nlink 0, syncs
// without error) while every new name lands in the new, never-synced
// directory: a silent hole for the rest of the daemon's life. Opened by path,
// the sync follows the creates; the one window left (a replacement between
// the create and the open) is closed by the identity check below.
import fs from 'node:fs';
import path from 'node:path';
import { PoolOffline } from './errors.js';

/**
 * Resolves once `file`'s directory entry is durable. `fd` is the file as
 * created (any open descriptor of it). Throws PoolOffline when the directory
 * was removed or replaced, or the name no longer leads to this file, so the
 * caller fails before any index entry refers to the file. The identity stats
 * run on the calling thread: metadata of a directory just opened, microseconds
 * each, where four threadpool round trips would each cost a scheduling delay.
 */
export async function syncNewEntry(file: string, fd: number): Promise<void> {
  const dirPath = path.dirname(file);
  let dir: fs.promises.FileHandle;
  try {
    dir = await fs.promises.open(dirPath, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new PoolOffline(`directory ${dirPath} is gone: ${path.basename(file)} was made in a removed directory`, { cause: err });
    throw err;
  }
  try {
    await dir.sync();
    // After the sync: the directory the path names now is the one synced,
    // and in it the name leads to our file, so our entry was in the synced
    // directory (entries do not move between directories but by rename).
    const synced = fs.fstatSync(dir.fd);
    const current = fs.statSync(dirPath, { throwIfNoEntry: false });
    if (!current || current.ino !== synced.ino || current.dev !== synced.dev) {
      throw new PoolOffline(`directory ${dirPath} was removed or replaced while ${path.basename(file)} was created in it: the new name is not durable`);
    }
    const entry = fs.lstatSync(file, { throwIfNoEntry: false });
    const opened = fs.fstatSync(fd);
    if (!entry || entry.ino !== opened.ino || entry.dev !== opened.dev) {
      throw new PoolOffline(`${file} no longer names the file just created (its directory was replaced, or the file removed)`);
    }
  } finally {
    await dir.close();
  }
}
