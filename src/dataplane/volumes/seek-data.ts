// lseek(SEEK_DATA) and fallocate(PUNCH_HOLE) through native/fs_seek.c: where
// a file's next data extent starts, so a volume can skip reading a chunk that
// is a hole; and freeing the blocks of file ranges no chunk uses any more.

import { loadNativeAddon } from '../../native-addon.js';

interface FsSeekAddon {
  firstDataOffsetAsync(fd: number, offsetBytes: number, done: (error: NodeJS.ErrnoException | null, dataOffsetBytes: number) => void): void;
  punchHoleAsync(fd: number, offsetBytes: number, lengthBytes: number, done: (error: NodeJS.ErrnoException | null) => void): void;
}

/** native/build/Release/fs_seek.node (see src/native-addon.ts). */
const addon = loadNativeAddon<FsSeekAddon>('fs_seek');

/**
 * lseek(fd, offsetBytes, SEEK_DATA) on the libuv threadpool (ext4/xfs take the
 * inode lock for it, which a concurrent buffered write holds): the start of
 * the first data extent at or after offsetBytes, or -1 if there is none
 * (ENXIO: only holes up to end of file, or offsetBytes at or past it). A file
 * system without hole tracking reports offsetBytes itself (all data), so a
 * caller treating "< end of range" as "may hold bytes" stays correct there.
 * Rejects with the errno (code set) on any other failure.
 */
export function firstDataOffset(fd: number, offsetBytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    addon.firstDataOffsetAsync(fd, offsetBytes, (error, dataOffsetBytes) => (error ? reject(error) : resolve(dataOffsetBytes)));
  });
}

/**
 * fallocate(fd, PUNCH_HOLE | KEEP_SIZE, offsetBytes, lengthBytes) on the
 * libuv threadpool: the range reads as zeros from then on and its blocks are
 * freed; the file's size is unchanged. Resolves true once punched, false
 * when the file system cannot punch holes (EOPNOTSUPP: the caller goes on
 * without, the space stays used as before). Rejects with the errno (code
 * set) on any other failure. The caller must own the range: bytes a chunk
 * or a read still needs would read as zeros.
 */
export function punchHole(fd: number, offsetBytes: number, lengthBytes: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    addon.punchHoleAsync(fd, offsetBytes, lengthBytes, (error) => {
      if (error === null) resolve(true);
      else if (error.code === 'EOPNOTSUPP') resolve(false);
      else reject(error);
    });
  });
}
