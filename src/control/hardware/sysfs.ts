// Reading sysfs attributes: every attribute is optional (kernels differ in
// what they expose), so a missing or unreadable one reads as null.

import { readFile, readdir, readlink, realpath } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';

// sysfs files are at most one page; a larger read means we are not on sysfs.
const MAX_ATTRIBUTE_BYTES = 64 * 1024;

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  // EIO/EINVAL/ENXIO/EOPNOTSUPP: attributes whose show() fails for this device
  // (e.g. nuse on a controller that is resetting). EACCES: root-only attributes.
  return (
    code === 'ENOENT' ||
    code === 'ENOTDIR' ||
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
  try {
    const buf = await readFile(path);
    return buf.length > MAX_ATTRIBUTE_BYTES ? buf.subarray(0, MAX_ATTRIBUTE_BYTES) : buf;
  } catch (err) {
    if (isMissing(err)) return null;
    throw err;
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
