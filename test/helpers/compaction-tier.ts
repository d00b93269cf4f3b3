// The compaction tests' shared setup: the temp dir their cold tier lives in (closed and removed when the test ends) and objects put with a model of their bytes.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { ObjectStore } from '../../src/dataplane/objects/store.js';
import { bodyOf } from './cold.js';

/**
 * A fresh temp dir named `prefix`...; when `t` ends, `close` runs (the
 * test's latest tier: its daemon parts write into the dir; a close that
 * fails fails the test), then the dir is removed (also when `close` threw).
 */
export function compactionTempDir(t: TestContext, prefix: string, close: () => Promise<unknown>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(async () => {
    try {
      await close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  return dir;
}

/** Puts `lengthBytes` of random bytes as cold/`key` and records them in `models` (what the object must read back). */
export async function putModel(store: ObjectStore, models: Map<string, Buffer>, key: string, lengthBytes: number): Promise<void> {
  const bytes = crypto.randomBytes(lengthBytes);
  await store.putObject('cold', key, bodyOf(bytes), { contentHeaders: {}, userMeta: {}, expectedBytes: bytes.length });
  models.set(key, bytes);
}
