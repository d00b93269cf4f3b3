// Damaged-index-record test setup: S3 daemons (EC policy + config in a temp data dir, or a hot victim beside a kept object), one LMDB record rewritten with the daemon stopped, teardown.
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
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

/** Teardown for a test that restarts on its data dir: the live daemon killed, its data dir and aws HOME removed. */
export async function killAndRemove(env: S3Env, dataDir: string): Promise<void> {
  env.sdk.destroy();
  await env.daemon.kill();
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.rmSync(env.home, { recursive: true, force: true });
}

/** Creates hot `bucket` with two objects of `lengthBytes` random bytes, 'kept' and 'victim'; returns kept's bytes. */
export async function putKeptAndVictim(env: S3Env, bucket: string, lengthBytes: number): Promise<Buffer> {
  await env.sdk.send(new CreateBucketCommand({ Bucket: bucket }));
  const kept = crypto.randomBytes(lengthBytes);
  await env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: 'kept', Body: kept }));
  await env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: 'victim', Body: crypto.randomBytes(lengthBytes) }));
  return kept;
}

/** Every hot object file of the data directory's hot-0 pool, path -> bytes. */
export function hotFiles(dataDir: string): Map<string, Buffer> {
  const root = path.join(dataDir, 'pools', 'hot-0', 'objects');
  const out = new Map<string, Buffer>();
  for (const fan of fs.readdirSync(root)) for (const f of fs.readdirSync(path.join(root, fan))) out.set(path.join(fan, f), fs.readFileSync(path.join(root, fan, f)));
  return out;
}
