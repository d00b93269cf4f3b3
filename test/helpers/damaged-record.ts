// Damaged-index-record test setup: S3 daemons (EC policy + config in a temp data dir, or a hot victim beside a kept object), one LMDB record rewritten with the daemon stopped,
// teardown (s3ForTest / s3WithKeptAndVictim / ecS3ForTest: a restartable daemon torn down after the test; coldBucketModel: a cold bucket and its model), an object downloaded by the aws cli, the record's stored bytes, a record's bytes torn (no longer decoding), `couchestor fsck` flags run on the data dir; and daemon-less: a temp MetaStore, an ObjectStore on it, index keys and bucket records written through LMDB.
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../../src/config.js';
import type { TestContext } from 'node:test';
import { MetaStore } from '../../src/dataplane/meta/store.js';
import { ObjectStore } from '../../src/dataplane/objects/store.js';
import type { VolumeManager } from '../../src/dataplane/volumes/manager.js';
import { open } from 'lmdb';
import { CLI } from './daemon.js';
import { aws, createColdBucket, restartS3, startS3, type S3Env } from './s3-env.js';

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

/** A MetaStore in a new temp dir (`prefix`), closed and removed after the test. */
export function tempMeta(t: TestContext, prefix: string): MetaStore {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const meta = MetaStore.open(dir);
  t.after(async () => {
    await meta.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return meta;
}

/** A real ObjectStore over `meta` with no pools (nothing to free), holding hot bucket 'b'. */
export async function storeWithHotBucket(meta: MetaStore): Promise<ObjectStore> {
  const manager = { meta, pools: new Map() } as unknown as VolumeManager;
  const store = await ObjectStore.open(manager);
  await store.createBucket('b', 'hot');
  return store;
}

/** A part's index key: 1, the upload id, the part number as 2 bytes (objects/store.ts partKey). */
export const partKey = (uploadId: string, part: number) => Buffer.concat([Buffer.from([1]), Buffer.from(uploadId, 'latin1'), Buffer.from([part >> 8, part & 0xff])]);

/** An object's index key in bucket `bucketId` (< 256): 1, the id as 4 bytes, the key. */
export const objectKey = (bucketId: number, key: string) => Buffer.concat([Buffer.from([1, 0, 0, 0, bucketId]), Buffer.from(key)]);

/** Cold bucket record 'bkt' with id 9, written through LMDB. */
export async function putColdBucket9(meta: MetaStore): Promise<void> {
  await meta.openDB<unknown, string>('s3-buckets').put('bkt', { name: 'bkt', id: 9, tier: 'cold', createdMs: 0 });
}

/** The stored (msgpack) bytes and decoded value of the first record of `db` that `pick` accepts (the daemon must be stopped). */
export async function readRecord<V>(dataDir: string, db: string, pick: (v: V) => boolean, what = 'the record'): Promise<{ key: Buffer; value: V; raw: Buffer }> {
  const meta = MetaStore.open(dataDir);
  try {
    const records = meta.openDB<V, Buffer>(db);
    const hit = [...records.getRange({ start: Buffer.from([1]) })].find((e) => pick(e.value));
    assert.ok(hit, `${what} is in the index`);
    const key = Buffer.from(hit.key);
    return { key, value: hit.value, raw: Buffer.from(records.getBinary(key)!) };
  } finally {
    await meta.close();
  }
}

/** `couchestor fsck --quarantine-damaged` (or other fsck flags) through the real CLI on a stopped data dir. */
export function fsckCli(dataDir: string, ...flags: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'fsck', ...flags, '--data-dir', dataDir], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Stores `bytes` as the raw value of `key` in `db` (no encoding), the daemon stopped. */
export async function putRawValue(dataDir: string, db: string, key: Buffer, bytes: Buffer): Promise<void> {
  const root = open({ path: path.join(dataDir, 'meta'), maxDbs: 64, mapSize: 4 * 1024 ** 3 });
  try {
    await root.openDB<Buffer, Buffer>({ name: db, encoding: 'binary' }).put(key, bytes);
  } finally {
    await root.close();
  }
}

/**
 * Tears the first record of `db` that `pick` accepts (the daemon stopped): its stored msgpack bytes cut to
 * their first half, so they no longer decode (a torn LMDB value). Returns its index key and the torn bytes.
 */
export async function tearRecord<V>(dataDir: string, db: string, pick: (v: V) => boolean, what = 'the record'): Promise<{ key: Buffer; torn: Buffer }> {
  const rec = await readRecord<V>(dataDir, db, pick, what);
  const torn = rec.raw.subarray(0, rec.raw.length >> 1);
  await putRawValue(dataDir, db, rec.key, torn);
  return { key: rec.key, torn };
}

/** An S3 daemon for a test that restarts it: `restart` is restartS3 on the latest env. After the test the latest daemon is killed, its data dir and aws HOME removed. */
export interface S3Run {
  env: S3Env;
  dataDir: string;
  restart(): Promise<S3Env>;
}

/** startS3 (or `start`) for the length of the test `t`; see S3Run. */
export async function s3ForTest(t: TestContext, start: () => Promise<S3Env> = () => startS3()): Promise<S3Run> {
  const first = await start();
  const run: S3Run = {
    env: first,
    dataDir: first.daemon.dataDir,
    async restart() {
      run.env = await restartS3(run.env);
      return run.env;
    },
  };
  t.after(() => killAndRemove(run.env, run.dataDir));
  return run;
}

/** s3ForTest, then putKeptAndVictim in hot bucket 'hot', 256 KiB each: `kept` is kept's bytes. */
export async function s3WithKeptAndVictim(t: TestContext): Promise<S3Run & { kept: Buffer }> {
  const run = await s3ForTest(t);
  const kept = await putKeptAndVictim(run.env, 'hot', 256 * 1024);
  return Object.assign(run, { kept });
}

/** Downloads through the aws cli to a file in the env's HOME (`args` given its path) and returns its bytes; the cli must exit 0 (`what` leads the message). */
export function awsDownload(env: S3Env, args: (file: string) => string[], what: string): Buffer {
  const file = path.join(env.home, 'got');
  const r = aws(env, args(file));
  assert.equal(r.status, 0, `${what}: ${r.stderr}`);
  const bytes = fs.readFileSync(file);
  fs.rmSync(file);
  return bytes;
}

/** s3ForTest on startEcS3(`prefix`, `config`). */
export function ecS3ForTest(t: TestContext, prefix: string, config: string): Promise<S3Run> {
  return s3ForTest(t, async () => (await startEcS3(prefix, config)).env);
}

/** Creates cold bucket 'cold'; `put` stores an object in it (SDK, the run's current daemon) and its bytes in `model`. */
export async function coldBucketModel(run: S3Run): Promise<{ model: Map<string, Buffer>; put: (key: string, bytes: Buffer) => Promise<void> }> {
  await createColdBucket(run.env, 'cold');
  const model = new Map<string, Buffer>();
  const put = async (key: string, bytes: Buffer) => {
    await run.env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: key, Body: bytes }));
    model.set(key, bytes);
  };
  return { model, put };
}
