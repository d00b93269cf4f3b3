// The index's disk full (meta/ on a small tmpfs, filled): a failed LMDB
// commit no longer ends the daemon. lmdb-js rejects promises no caller can
// handle (the write's own, when nobody awaits it, and its commitError), and
// Node 20 exited on them (code 1) at the first write that needed the index.
// Now the index is latched failed: the NBD FLUSH that needed it answers EIO,
// an S3 PUT 503 naming the index, /readyz 503 with the cause, a log line;
// another volume and an object already there still read. Stopped, given
// room and restarted, everything acknowledged reads back. Fails before the
// fix (the daemon exits 1 at the FLUSH).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, CreateMultipartUploadCommand, GetObjectCommand, PutObjectCommand, type S3ServiceException } from '@aws-sdk/client-s3';
import { nbdsh, TestDaemon } from './helpers/daemon.js';
import { readyz } from './helpers/missing-pool.js';
import { tinyFileSystem } from './helpers/journal.js';
import { assertPatchedLmdb } from './helpers/lmdb.js';
import { outcome, sdkClient } from './helpers/s3-env.js';

const MiB = 1024 * 1024;
/** Batches of 64 fresh chunks the test writes and FLUSHes, at most, with the index's disk full. */
const BATCHES = 15;

test('the index disk full: the daemon stays up, the write that needs the index fails, /readyz says why, reads go on; with room, a restart reads back all acknowledged', async (t) => {
  const tiny = await tinyFileSystem(t, 24 * MiB, 'index-full-');
  // The daemon is another process: only a real mount (root, as CI runs) is seen by it.
  assert.equal(tiny.kind, 'mount', `needs a tmpfs the daemon (another process) sees (run as root); got ${tiny.kind}`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'index-full-data-'));
  t.after(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  fs.symlinkSync(tiny.dir, path.join(dataDir, 'meta'));
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), 'demoVolume: null\n');

  let d = await TestDaemon.start({ dataDir });
  t.after(() => d.kill());
  // lmdb-js's own write-error path overran a heap buffer (mdb.c: a failed page write's message,
  // up to 134 bytes, into malloc(100)) and glibc aborted the daemon about 1 run in 13: the daemon
  // runs lmdb-js patched (patches/lmdb+3.5.6.patch, built from source by npm install).
  assertPatchedLmdb(d.proc.pid!);
  const creds = JSON.parse(fs.readFileSync(path.join(dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] };
  const s3 = () => sdkClient(d.s3Endpoint, creds.keys[0]!.accessKeyId, creds.keys[0]!.secretAccessKey);
  let sdk = s3();
  t.after(() => sdk.destroy());
  d.createVolume('v', '1G');
  d.createVolume('w', '8M');
  // Acknowledged before the disk fills: a FLUSHed block on each volume, an object.
  nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('v'))}); h.pwrite(b"\\xa1" * 4096, 0); h.flush()`);
  nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('w'))}); h.pwrite(b"\\xb2" * 4096, 0); h.flush()`);
  await sdk.send(new CreateBucketCommand({ Bucket: 'index-full' }));
  const body = Buffer.alloc(64 * 1024, 0xc3);
  await sdk.send(new PutObjectCommand({ Bucket: 'index-full', Key: 'kept', Body: body }));
  assert.equal((await readyz(d)).status, 200);

  tiny.fill(path.join(tiny.dir, 'data.mdb'));
  // Writes to chunks never written need chunk-map entries. LMDB reuses its freed pages first, so
  // the first FLUSHes may still commit: batches of 64 chunks, each FLUSHed, until a write or
  // FLUSH fails (the volume goes offline once its chunk-map write fails).
  const flushed = nbdsh(
    [
      `h.connect_uri(${JSON.stringify(d.exportUri('v'))})`,
      'for batch in range(BATCHES):',
      '    try:',
      '        for i in range(64): h.pwrite(bytes([batch + 1]) * 4096, (1 + batch * 64 + i) * 1048576)',
      '        h.flush()',
      '    except nbd.Error as e:',
      '        print("batch", batch, "errno", e.errno)',
      '        break',
      'else:',
      '    print("all flushed")',
    ].join('\n').replace('BATCHES', String(BATCHES)),
  ).trim();
  const failedAt = /^batch (\d+) errno (EIO|ENOSPC)$/.exec(flushed);
  assert.ok(failedAt, `every FLUSH succeeded, or one failed wrongly, with the index's disk full: ${flushed}`);
  const acked = Number(failedAt[1]);
  assert.equal(d.proc.exitCode, null, `the daemon exited (${d.proc.exitCode}):\n${d.stderr}`);
  const ready = await readyz(d);
  assert.equal(ready.status, 503);
  assert.match(ready.reasons.join('\n'), /metadata index commit failed \(No space left on device/);

  const put = await sdk.send(new PutObjectCommand({ Bucket: 'index-full', Key: 'new', Body: body })).then(
    () => assert.fail('an S3 PUT succeeded with the index failed'),
    (e: S3ServiceException) => e,
  );
  assert.deepEqual([put.$metadata.httpStatusCode, put.name], [503, 'ServiceUnavailable'], `an S3 PUT with the index failed: ${put.message}`);
  assert.match(put.message, /metadata index commit failed/);
  // A write awaited on its own (not in a transaction): was lmdb-js's "Commit failed", answered 500 "try again".
  const mp = await sdk.send(new CreateMultipartUploadCommand({ Bucket: 'index-full', Key: 'mp' })).then(
    () => assert.fail('an S3 CreateMultipartUpload succeeded with the index failed'),
    (e: S3ServiceException) => e,
  );
  assert.deepEqual([mp.$metadata.httpStatusCode, mp.name], [503, 'ServiceUnavailable'], `CreateMultipartUpload with the index failed: ${mp.message}`);
  // Latched, S3 writes are refused before LMDB tries to commit again (each failed commit was lmdb-js's stderr
  // print and another failed page write, mdb.c's overflow): 4 more PUTs add no "Write error" (1 allowed: a
  // background heat write). A request's log line follows its commit attempt's print on the same stderr.
  const writeErrors = () => (d.stderr.match(/Write error: /g) ?? []).length;
  const putsFailed = () => (d.stderr.match(/s3: request failed method=PUT/g) ?? []).length;
  const [errorsBefore, putsBefore] = [writeErrors(), putsFailed()];
  for (let i = 0; i < 4; i++) assert.deepEqual(await outcome(sdk.send(new PutObjectCommand({ Bucket: 'index-full', Key: `again-${i}`, Body: body }))), [503, 'ServiceUnavailable']);
  for (const deadline = Date.now() + 5000; putsFailed() < putsBefore + 4; ) {
    assert.ok(Date.now() < deadline, `the 4 refused PUTs were not logged:\n${d.stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(writeErrors() - errorsBefore <= 1, `refused PUTs still tried to commit (${writeErrors() - errorsBefore} failed page writes)`);
  // Reads go on: the other volume's acknowledged block, the object already there.
  assert.equal(nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('w'))}); print(h.pread(4096, 0) == b"\\xb2" * 4096)`).trim(), 'True');
  const got = await sdk.send(new GetObjectCommand({ Bucket: 'index-full', Key: 'kept' }));
  assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(body), 'the object read back wrong while the index was full');
  assert.equal(d.proc.exitCode, null, `the daemon exited (${d.proc.exitCode}):\n${d.stderr}`);

  // Checked late: the daemon's stderr reaches this process apart from its HTTP answers.
  assert.match(d.stderr, /ERROR metadata index: a commit failed.*No space left on device/);

  // Room again; a restart: everything acknowledged is there. Killed, not stopped: acknowledged
  // means durable at any instant.
  await d.kill();
  // The offline CLI on the still-full index: a clear error naming the cause (was lmdb-js's "Commit failed
  // (see commitError ...)" and Node's unhandled-rejection trace). It exits 1; LMDB may reuse a freed page
  // and commit: then 0.
  const offline = d.cli('volumes', 'create', 'offline', '8M');
  if (offline.status !== 0) {
    assert.equal(offline.status, 1, `the offline CLI ended ${offline.status ?? offline.signal}:\n${offline.stderr}`);
    assert.match(offline.stderr, /^couchestor: metadata index commit failed \(No space left on device/m);
    assert.doesNotMatch(offline.stderr, /Node\.js v|triggerUncaughtException|see commitError/, 'the CLI ended on an unhandled rejection');
  }
  fs.rmSync(path.join(tiny.dir, 'filler'));
  sdk.destroy();
  d = await TestDaemon.start({ dataDir });
  sdk = s3();
  assert.equal((await readyz(d)).status, 200);
  const back = nbdsh(
    [
      `h.connect_uri(${JSON.stringify(d.exportUri('v'))})`,
      'print(h.pread(4096, 0) == b"\\xa1" * 4096)',
      // The batches whose FLUSH succeeded while the disk was full.
      `print(all(h.pread(4096, (1 + b * 64 + i) * 1048576) == bytes([b + 1]) * 4096 for b in range(${acked}) for i in range(64)))`,
      `h2 = nbd.NBD(); h2.connect_uri(${JSON.stringify(d.exportUri('w'))}); print(h2.pread(4096, 0) == b"\\xb2" * 4096)`,
    ].join('\n'),
  );
  assert.deepEqual(back.trim().split('\n'), ['True', 'True', 'True'], 'acknowledged blocks read back after the restart (v block 0, v batches FLUSHed while full, w block 0)');
  const kept = await sdk.send(new GetObjectCommand({ Bucket: 'index-full', Key: 'kept' }));
  assert.ok(Buffer.from(await kept.Body!.transformToByteArray()).equals(body));
  assert.deepEqual(await outcome(sdk.send(new GetObjectCommand({ Bucket: 'index-full', Key: 'new' }))), [404, 'NoSuchKey']);
});
