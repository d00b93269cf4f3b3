// Damaged-index-record test setup: an S3 daemon with the EC policy and a config in its own data dir, one LMDB record rewritten with the daemon stopped.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../../src/config.js';
import { MetaStore } from '../../src/dataplane/meta/store.js';
import { startS3, type S3Env } from './s3-env.js';

/** A new temp data dir (`prefix`) holding the standard EC policy and `config` as couchestor.yaml, and a daemon started on it. */
export async function startEcS3(prefix: string, config: string): Promise<{ dataDir: string; env: S3Env }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), config);
  return { dataDir, env: await startS3({ dataDir }) };
}

/**
 * Rewrites the first record of `db` that `pick` accepts (the daemon must be stopped): `edit` gets a copy of the
 * stored value and returns the one to store. Returns the value as it was.
 */
export async function rewriteRecord<V>(dataDir: string, db: string, pick: (v: V) => boolean, edit: (v: V) => unknown, what = 'the record'): Promise<V> {
  const meta = MetaStore.open(dataDir);
  try {
    const records = meta.openDB<V, Buffer>(db);
    const hit = [...records.getRange({ start: Buffer.from([1]) })].find((e) => pick(e.value));
    assert.ok(hit, `${what} is in the index`);
    await records.put(Buffer.from(hit.key), edit(structuredClone(hit.value)) as V);
    return hit.value;
  } finally {
    await meta.close();
  }
}
