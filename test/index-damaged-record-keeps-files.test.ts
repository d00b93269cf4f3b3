// A damaged S3 object record in the index must never make the daemon delete
// what the record may reference: at start the object store sweeps hot object
// files no index record names (uploads cut short by a crash), and a record it
// cannot read names none. With a damaged record there the sweep is off and
// the file stays (byte-exact); the other objects still serve. Before the fix
// the daemon did not start at all (value.segments is not iterable); with the
// record merely skipped, the sweep deleted the victim's file (checked).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { MetaStore } from '../src/dataplane/meta/store.js';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { startS3, type S3Env } from './helpers/s3-env.js';

const MiB = 1024 * 1024;
const BUCKET = 'hotdmg';

/** Every hot object file of the data directory's hot-0 pool, path -> bytes. */
function hotFiles(dataDir: string): Map<string, Buffer> {
  const root = path.join(dataDir, 'pools', 'hot-0', 'objects');
  const out = new Map<string, Buffer>();
  for (const fan of fs.readdirSync(root)) for (const f of fs.readdirSync(path.join(root, fan))) out.set(path.join(fan, f), fs.readFileSync(path.join(root, fan, f)));
  return out;
}

test('with a damaged object record in the index, the start-up sweep keeps every hot object file', async (t) => {
  let env: S3Env = await startS3();
  const dataDir = env.daemon.dataDir;
  t.after(async () => {
    env.sdk.destroy();
    await env.daemon.kill();
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(env.home, { recursive: true, force: true });
  });
  await env.sdk.send(new CreateBucketCommand({ Bucket: BUCKET }));
  const kept = crypto.randomBytes(MiB);
  await env.sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'kept', Body: kept }));
  await env.sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'victim', Body: crypto.randomBytes(MiB) }));
  assert.equal(await env.daemon.stop(), 0);
  const before = hotFiles(dataDir);
  assert.equal(before.size, 2, 'one hot file per object');

  const meta = MetaStore.open(dataDir);
  const objects = meta.openDB<{ key: string; segments: { kind: string }[] }, Buffer>(OBJECTS_DB);
  const hit = [...objects.getRange({ start: Buffer.from([1]) })].find((e) => e.value.key === 'victim');
  assert.ok(hit);
  assert.deepEqual(
    hit.value.segments.map((s) => s.kind),
    ['hot'],
  );
  // Damaged: its one segment's kind unreadable, so the record names no file.
  await objects.put(Buffer.from(hit.key), { ...hit.value, segments: [{ ...hit.value.segments[0]!, kind: 'h\u0000t' }] });
  await meta.close();

  env.sdk.destroy();
  fs.rmSync(env.home, { recursive: true, force: true });
  env = await startS3({ dataDir });
  const after = hotFiles(dataDir);
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), 'no hot file swept');
  for (const [f, bytes] of before) assert.ok(after.get(f)!.equals(bytes), `${f} unchanged`);
  assert.match(env.daemon.stderr, /damaged index records; unreferenced segment files are kept/);
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'kept' }));
  assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(kept), 'the other object reads back');
});
