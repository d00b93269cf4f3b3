// Reading sysfs attributes: every attribute is optional (kernels differ in
// what they expose), so a missing or unreadable one reads as null.

import { open, readdir, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';

// sysfs attributes are at most one page; anything past this bound is not an
// attribute we read (a --sys-root pointed at a regular tree, say).
const MAX_ATTRIBUTE_BYTES = 8 * 1024;

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  // EIO/EINVAL/ENXIO/EOPNOTSUPP: attributes whose show() fails for this device
  // (e.g. nuse on a controller that is resetting). EACCES: root-only attributes.
  return (
    code === 'ENOENT' ||
    code === 'ENOTDIR' ||
    // A link loop or an absurd path (a broken or hand-made tree): that entry unreadable, not the scan.
    code === 'ELOOP' ||
    code === 'ENAMETOOLONG' ||
    code === 'EIO' ||
    code === 'EINVAL' ||
    code === 'ENXIO' ||
    code === 'ENODEV' ||
    code === 'EOPNOTSUPP' ||
    code === 'EACCES' ||
    code === 'EPERM'
  );
}

export async function readBytes(path: string): Promise<Buffer | null> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
    // sysfs answers a whole attribute in one read; read at most the bound.
    const buf = Buffer.alloc(MAX_ATTRIBUTE_BYTES);
    const { bytesRead } = await handle.read(buf, 0, MAX_ATTRIBUTE_BYTES, 0);
    return buf.subarray(0, bytesRead);
  } catch (err) {
    if (isMissing(err) || (err as NodeJS.ErrnoException).code === 'EISDIR') return null;
    throw err;
  } finally {
    await handle?.close();
  }
}

/** Attribute text with the trailing newline and any space padding removed; empty reads as null. */
export async function readAttr(path: string): Promise<string | null> {
  const buf = await readBytes(path);
  if (buf === null) return null;
  const text = buf.toString('utf8').trim();
  return text.length === 0 ? null : text;
}

export async function readInt(path: string): Promise<number | null> {
  const text = await readAttr(path);
  if (text === null) return null;
  const value = Number.parseInt(text, 10);
  return Number.isSafeInteger(value) ? value : null;
}

export async function listDir(path: string): Promise<string[] | null> {
  try {
    return (await readdir(path)).sort(compareNatural);
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
}

export async function resolve(path: string): Promise<string | null> {
  try {
    return await realpath(path);
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
  }
}

/** Basename of a symlink's target (e.g. a device's `driver` link), or null. */
export async function linkTargetName(path: string): Promise<string | null> {
  try {
    return basename(await readlink(path));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (isMissing(err) || code === 'EINVAL') return null;
    throw err;
  }
}

export async function exists(path: string): Promise<boolean> {
  return (await resolve(path)) !== null;
}

/** Parses a `KEY=value` uevent file. */
export async function readUevent(dir: string): Promise<Map<string, string>> {
  const text = await readAttr(join(dir, 'uevent'));
  const out = new Map<string, string>();
  if (text === null) return out;
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/** SCSI VPD page 0x80 (unit serial number): 4-byte header, then ASCII. */
export function parseVpdSerial(page: Buffer | null): string | null {
  if (page === null || page.length < 4 || page[1] !== 0x80) return null;
  const length = page.readUInt16BE(2);
  const serial = page.subarray(4, 4 + length).toString('latin1').replace(/\0/g, '').trim();
  return serial.length === 0 ? null : serial;
}

export function relativeTo(root: string, path: string): string {
  return relative(root, path);
}

/** Numeric-aware order, so nvme2n1 sorts before nvme10n1. */
export function compareNatural(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}
