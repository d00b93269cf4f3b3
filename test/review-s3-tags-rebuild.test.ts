// Review of 5a768fc (object tags kept in the LMDB object record): tags written
// while a pool rebuild and segment compaction passes flip the same records
// (CAS per stripe, records re-read in their transaction) land on the current
// version, are never dropped by a flip, never make a flip fail, and never
// resurrect a deleted key; fsck is clean and tags, bytes and absences survive
// a restart with two more pools lost. Real daemon, aws SDK, 1 MiB segments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, GetObjectTaggingCommand, PutObjectCommand, PutObjectTaggingCommand, type Tag } from '@aws-sdk/client-s3';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { createColdBucket, startS3, type S3Env } from './helpers/s3-env.js';
import { MiB, allHealthy, api, coldStatus, fsck, loseAndReplacePool, losePool, patternBytes, rebuildPool, scrub } from './helpers/cold.js';

const OBJECTS = 24;
/** Several stripes per record: one record flipped by several CAS (replaceMany batches them). */
const STRIPES_PER_OBJECT = 3;
/** Pools lost and rebuilt one after the other while tags are written throughout. */
const REBUILT_POOLS = [2, 3, 4];
const CONFIG = `demoVolume: null\ncoldTier:\n  destageIntervalMs: 3600000\n  segmentSizeBytes: ${MiB}\n  compaction:\n    intervalMs: 0\n`;

async function get(env: S3Env, key: string): Promise<Buffer> {
  const got = await env.sdk.send(new GetObjectCommand({ Bucket: 'cold', Key: key }));
  return Buffer.from(await got.Body!.transformToByteArray());
}

async function tagsOf(env: S3Env, key: string): Promise<string[][]> {
  const r = await env.sdk.send(new GetObjectTaggingCommand({ Bucket: 'cold', Key: key }));
  return (r.TagSet ?? []).map((t) => [t.Key!, t.Value!]);
}

const putTags = (env: S3Env, key: string, tags: string[][]) => env.sdk.send(new PutObjectTaggingCommand({ Bucket: 'cold', Key: key, Tagging: { TagSet: tags.map(([Key, Value]): Tag => ({ Key, Value })) } }));

async function isGone(env: S3Env, key: string): Promise<boolean> {
  try {
    await get(env, key);
    return false;
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') return true;
    throw err;
  }
}

test('object tags written during a pool rebuild and compaction: every flip lands, tags are the last written, deleted keys stay deleted, also after a restart', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'review-s3-tags-rebuild-'));
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), CONFIG);
  let env = await startS3({ dataDir });
  try {
    await createColdBucket(env, 'cold');
    const model = new Map<string, Buffer>();
    const tagModel = new Map<string, string[][]>();
    for (let i = 0; i < OBJECTS; i++) {
      const bytes = patternBytes(STRIPES_PER_OBJECT * MiB, 0x0c00 + i);
      // Odd keys start tagged by x-amz-tagging (record written with tags), even keys untagged.
      await env.sdk.send(new PutObjectCommand({ Bucket: 'cold', Key: `o${i}`, Body: bytes, ...(i % 2 === 1 ? { Tagging: `start=${i}` } : {}) }));
      model.set(`o${i}`, bytes);
    }
    // Every other object deleted: compaction then moves the live ones beside the dead records.
    const deleted: string[] = [];
    for (let i = 0; i < OBJECTS; i += 2) {
      await env.sdk.send(new DeleteObjectCommand({ Bucket: 'cold', Key: `o${i}` }));
      model.delete(`o${i}`);
      deleted.push(`o${i}`);
    }
    for (const key of model.keys()) tagModel.set(key, [['start', key.slice(1)]]);
    const live = model.size;

    let done = false;
    let passes = 0;
    let compacted = 0;
    let tagWrites = 0;
    let refusedOnDeleted = 0;
    const compacting = (async () => {
      do {
        const r = await api<{ segmentsCompacted: number }>(env.daemon, 'POST', '/v1/compact');
        compacted += r.segmentsCompacted;
        passes++;
      } while (!done);
    })();
    const tagging = (async () => {
      let round = 0;
      do {
        round++;
        for (const key of model.keys()) {
          const tags = [['round', String(round)], ['key', key]];
          await putTags(env, key, tags);
          tagModel.set(key, tags);
          tagWrites++;
        }
        // Tagging a deleted key answers NoSuchKey and never brings the record back.
        const gone = deleted[round % deleted.length]!;
        await assert.rejects(putTags(env, gone, [['resurrect', 'no']]), (e: { name?: string }) => e.name === 'NoSuchKey');
        refusedOnDeleted++;
      } while (!done);
    })();
    const reports: unknown[] = [];
    try {
      for (const pool of REBUILT_POOLS) {
        loseAndReplacePool(env.daemon, pool);
        const report = await rebuildPool(env.daemon, pool);
        reports.push(report);
        // Every stripe of every live object is checked and flipped: a tag write between
        // the listing and a flip neither fails the CAS nor is undone by it.
        assert.equal((report as { objectStripesChecked?: number }).objectStripesChecked, live * STRIPES_PER_OBJECT, JSON.stringify(report));
        assert.equal(report.notRebuilt, 0, JSON.stringify(report));
      }
    } finally {
      done = true;
      await Promise.all([compacting, tagging]);
    }
    t.diagnostic(`rebuilds ${JSON.stringify(reports)}; ${passes} compaction passes compacted ${compacted} segments; ${tagWrites} tag writes, ${refusedOnDeleted} refused on deleted keys`);
    assert.ok(tagWrites >= live, 'every live object was tagged at least once while the rebuilds ran');
    await scrub(env.daemon);
    await api<unknown>(env.daemon, 'POST', '/v1/compact');
    assert.equal((await scrub(env.daemon)).badStripes, 0, 'every shard verifies after the rebuild and compactions');
    assert.deepEqual((await coldStatus(env.daemon)).stripes, allHealthy(live * STRIPES_PER_OBJECT));
    const check = async (when: string) => {
      for (const [key, bytes] of model) {
        assert.ok((await get(env, key)).equals(bytes), `${key} byte-exact ${when}`);
        assert.deepEqual(await tagsOf(env, key), tagModel.get(key), `${key} tags ${when}`);
      }
      for (const key of deleted) assert.ok(await isGone(env, key), `${key} stays deleted ${when}`);
    };
    await check('after the rebuild');

    await env.daemon.kill();
    const { report: checked, stdout } = fsck(env.daemon);
    assert.deepEqual(checked.badShards, [], stdout);
    assert.equal(checked.stripes.Degraded + checked.stripes.Failed, 0, stdout);
    env.sdk.destroy();
    losePool(env.daemon, 0);
    losePool(env.daemon, 5);
    env = await startS3({ dataDir });
    await check('after a restart with cold-0 and cold-5 lost');
  } finally {
    await env.cleanup();
  }
});
