// The cold tier's journal identity: journal/.couchestor-journal, an id the
// index records (MetaStore.journalId). A dotfile, so `rm journal/*` (and
// `rm -r journal/*`) leave it: a journal directory emptied by hand is told
// from the empty one an operator makes to accept the loss of its writes
// (VolumeManager.refuseMissingJournalFiles), and another journal's directory
// (the wrong disk, an old copy) from this one.
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { writeFileDurableSync } from '../dir-sync.js';

export const JOURNAL_ID_FILE = '.couchestor-journal';

/** The id in `dir`'s journal identity, or null when there is none. */
export function readJournalId(dir: string): string | null {
  try {
    return fs.readFileSync(path.join(dir, JOURNAL_ID_FILE), 'utf8').trim() || null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** The id of `dir`'s journal identity, written (durable: file and directory fsync) with `want` or a new id when missing. */
export function ensureJournalId(dir: string, want: string | undefined): string {
  const have = readJournalId(dir);
  if (have !== null) return have;
  const id = want ?? randomUUID();
  if (!writeFileDurableSync(path.join(dir, JOURNAL_ID_FILE), id + '\n', 0o600)) return readJournalId(dir) ?? id;
  return id;
}
