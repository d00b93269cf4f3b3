// A damaged S3 object record in the index must never make the daemon delete
// what the record may reference: at start the object store sweeps hot object
// files no index record names (uploads cut short by a crash), and a record it
// cannot read names none. With a damaged record there the sweep is off and
// the file stays (byte-exact); the other objects still serve. Before the fix
// the daemon did not start at all (value.segments is not iterable); with the
// record merely skipped, the sweep deleted the victim's file (checked).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { OBJECTS_DB } from '../src/dataplane/objects/cold-segments.js';
import { hotFiles, killAndRemove, putKeptAndVictim, rewriteRecord } from './helpers/damaged-record.js';
import { restartS3, startS3, type S3Env } from './helpers/s3-env.js';

const MiB = 1024 * 1024;
const BUCKET = 'hotdmg';

test('with a damaged object record in the index, the start-up sweep keeps every hot object file', async (t) => {
  let env: S3Env = await startS3();
  const dataDir = env.daemon.dataDir;
  t.after(() => killAndRemove(env, dataDir));
  const kept = await putKeptAndVictim(env, BUCKET, MiB);
  assert.equal(await env.daemon.stop(), 0);
  const before = hotFiles(dataDir);
  assert.equal(before.size, 2, 'one hot file per object');

  type Rec = { key: string; segments: { kind: string }[] };
  await rewriteRecord<Rec>(dataDir, OBJECTS_DB, (v) => v.key === 'victim', (v) => {
    assert.deepEqual(
      v.segments.map((s) => s.kind),
      ['hot'],
    );
    // Damaged: its one segment's kind unreadable, so the record names no file.
    return { ...v, segments: [{ ...v.segments[0]!, kind: 'h\u0000t' }] };
  });

  env = await restartS3(env);
  const after = hotFiles(dataDir);
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), 'no hot file swept');
  for (const [f, bytes] of before) assert.ok(after.get(f)!.equals(bytes), `${f} unchanged`);
  assert.match(env.daemon.stderr, /damaged index records; unreferenced segment files are kept/);
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'kept' }));
  assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(kept), 'the other object reads back');
});
