// Two more real S3 clients against a real daemon, on a hot and a cold
// bucket, run as users run them: rclone (copy, lsjson, check --download,
// cat with a range, sync deleting, server-side copy, deletefile, purge;
// 0 B, 1 B, 1 MiB and a 12 MiB multipart file) and s3cmd (mb, put with a
// multipart upload, get, ls/la, info, sync both ways, setacl, del
// --recursive, signurl). Both are configured only by flags and environment
// (no config file is read or written). Bytes must round trip exactly and
// listings name what is there. A public ACL (s3cmd put -P, setacl
// --acl-public, rclone --s3-acl public-read) fails at once with 400
// AccessControlListNotSupported, as S3 with ACLs disabled answers (a 501
// had s3cmd retry for ~45 s).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { MiB } from './helpers/cold.js';
import { startS3HotAndCold, type S3Env } from './helpers/s3-env.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** Runs a client with nothing from the real HOME (no rclone.conf, no ~/.s3cfg) and no CA bundle override. */
function run(env: S3Env, cmd: string, args: string[], extra: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string; out: Buffer } {
  const r = spawnSync(cmd, args, { env: { PATH: '/usr/bin:/bin', HOME: env.home, LANG: 'C.UTF-8', ...extra }, timeout: 60_000, maxBuffer: 128 * MiB });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString(), out: r.stdout };
}

/** The remote `cs:` (the daemon), from the environment only. */
const rcloneEnv = (env: S3Env): NodeJS.ProcessEnv => ({
  RCLONE_CONFIG_CS_TYPE: 's3',
  RCLONE_CONFIG_CS_PROVIDER: 'Other',
  RCLONE_CONFIG_CS_ACCESS_KEY_ID: env.accessKeyId,
  RCLONE_CONFIG_CS_SECRET_ACCESS_KEY: env.secretAccessKey,
  RCLONE_CONFIG_CS_ENDPOINT: env.endpoint,
  RCLONE_CONFIG_CS_REGION: 'us-east-1',
});

function rclone(env: S3Env, ...args: string[]): { stdout: string; out: Buffer } {
  const r = run(env, '/usr/bin/rclone', ['--config', '/dev/null', '--retries', '1', '--low-level-retries', '1', ...args], rcloneEnv(env));
  assert.equal(r.status, 0, `rclone ${args.join(' ')}:\n${r.stderr}`);
  return r;
}

function s3cmd(env: S3Env, args: string[], ok = true): { status: number | null; stdout: string; stderr: string } {
  const hostPort = new URL(env.endpoint).host;
  const r = run(env, '/usr/bin/s3cmd', ['-c', '/dev/null', `--access_key=${env.accessKeyId}`, `--secret_key=${env.secretAccessKey}`, `--host=${hostPort}`, `--host-bucket=${hostPort}`, '--no-ssl', '--region=us-east-1', '--no-progress', ...args]);
  if (ok) assert.equal(r.status, 0, `s3cmd ${args.join(' ')}:\n${r.stderr}`);
  return r;
}

test('rclone and s3cmd on a hot and a cold bucket: bytes round trip, listings, multipart, sync, server-side copies, deletes; V2 presigned URLs refused by name', async (t) => {
  const started = Date.now();
  const env = await startS3HotAndCold();
  t.after(() => env.cleanup());
  t.diagnostic(`daemon up: ${Date.now() - started} ms`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 's3-rclone-s3cmd-'));
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));
  const src = path.join(work, 'src');
  fs.mkdirSync(src);
  // big: three 5 MiB parts, the last one short (the smallest multipart upload and copy with S3's 5 MiB part minimum).
  const files: Record<string, Buffer> = { empty: Buffer.alloc(0), one: Buffer.from('x'), mid: randomBytes(MiB + 7), big: randomBytes(12 * MiB + 3) };
  for (const [name, bytes] of Object.entries(files)) fs.writeFileSync(path.join(src, name), bytes);

  for (const bucket of ['hot', 'cold']) {
    // rclone: 5 MiB chunks, so the 12 MiB file is a 3-part multipart upload (to the cold bucket; the hot one
    // gets it by a server-side multipart copy below).
    const only = bucket === 'hot' ? ['--exclude', 'big'] : [];
    const want = Object.entries(files).filter(([n]) => bucket === 'cold' || n !== 'big');
    rclone(env, 'copy', src, `cs:${bucket}/dir`, '--s3-chunk-size', '5M', '--s3-upload-cutoff', '5M', ...only);
    const listed = JSON.parse(rclone(env, 'lsjson', '--hash', `cs:${bucket}/dir`).stdout) as { Name: string; Size: number; Hashes?: { md5?: string } }[];
    assert.deepEqual(listed.map((e) => [e.Name, e.Size]).sort(), want.map(([n, b]) => [n, b.length]).sort(), `${bucket}: rclone lsjson`);
    for (const e of listed) assert.equal(e.Hashes?.md5, md5(files[e.Name]!), `${bucket}/${e.Name}: md5 as rclone reads it (its metadata for the multipart one)`);
    rclone(env, 'check', '--download', src, `cs:${bucket}/dir`, ...only);
    assert.ok(rclone(env, 'cat', '--offset', String(MiB - 3), '--count', '1000', `cs:${bucket}/dir/mid`).out.equals(files.mid!.subarray(MiB - 3)), `${bucket}: ranged cat`);
    if (bucket === 'cold') {
      // Server-side multipart copy (UploadPartCopy, 5 MiB parts) of the 12 MiB object from the cold bucket to the hot one.
      rclone(env, 'copyto', `cs:cold/dir/big`, `cs:hot/bigcopy`, '--s3-copy-cutoff', '5M');
      assert.equal(md5(rclone(env, 'cat', `cs:hot/bigcopy`).out), md5(files.big!), 'server-side multipart copy cold -> hot');
      rclone(env, 'deletefile', `cs:hot/bigcopy`);
    }
    if (bucket === 'hot') {
      // A public ACL: refused at once by name (--retries 1 or not: a 4xx is not retried).
      const r = run(env, '/usr/bin/rclone', ['--config', '/dev/null', 'copyto', path.join(src, 'one'), 'cs:hot/public', '--s3-acl', 'public-read'], rcloneEnv(env));
      assert.notEqual(r.status, 0, 'rclone --s3-acl public-read');
      assert.match(r.stderr, /AccessControlListNotSupported/, 'rclone --s3-acl public-read names the refusal');
    }
    // sync deletes what the source no longer has.
    const less = path.join(work, `less-${bucket}`);
    fs.mkdirSync(less);
    fs.writeFileSync(path.join(less, 'one'), files.one!);
    rclone(env, 'sync', less, `cs:${bucket}/dir`);
    assert.deepEqual(rclone(env, 'lsf', '-R', `cs:${bucket}`).stdout.split('\n').filter(Boolean).sort(), ['dir/', 'dir/one'], `${bucket}: after sync and deletefile`);
    rclone(env, 'purge', `cs:${bucket}/dir`);
    assert.equal(rclone(env, 'lsf', '-R', `cs:${bucket}`).stdout, '', `${bucket}: purged`);
  }
  t.diagnostic(`rclone done: ${Date.now() - started} ms`);

  // s3cmd: its own bucket (hot), and the cold one.
  const mpFile = path.join(src, 'big'); // 12 MiB + 3: 3 parts
  s3cmd(env, ['mb', 's3://s3cmd-hot']);
  for (const bucket of ['s3cmd-hot', 'cold']) {
    // 5 MiB chunks: a 12 MiB file goes up in 3 parts (the last one short).
    const mp = files.big!;
    s3cmd(env, ['put', '--multipart-chunk-size-mb=5', mpFile, `s3://${bucket}/mp/big`]);
    s3cmd(env, ['sync', `${src}/`, `s3://${bucket}/sync/`, '--exclude', 'big']);
    const ls = s3cmd(env, ['ls', '--recursive', `s3://${bucket}`]).stdout;
    const rows = ls.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)).map((f) => [f[3], Number(f[2])]);
    assert.deepEqual(rows, [[`s3://${bucket}/mp/big`, mp.length], [`s3://${bucket}/sync/empty`, 0], [`s3://${bucket}/sync/mid`, files.mid!.length], [`s3://${bucket}/sync/one`, 1]], `${bucket}: s3cmd ls --recursive`);
    if (bucket === 'cold') assert.match(s3cmd(env, ['info', `s3://${bucket}/mp/big`]).stdout, new RegExp(`File size: ${mp.length}[\\s\\S]*MD5 sum:\\s+${md5(mp)}`), `${bucket}: info`);
    // Down: the multipart object and the synced files, in one sync.
    const got = path.join(work, `got-${bucket}`);
    s3cmd(env, ['sync', `s3://${bucket}/`, `${got}/`]);
    assert.equal(md5(fs.readFileSync(path.join(got, 'mp', 'big'))), md5(mp), `${bucket}: s3cmd sync down the multipart object`);
    for (const n of ['empty', 'one', 'mid']) assert.ok(fs.readFileSync(path.join(got, 'sync', n)).equals(files[n]!), `${bucket}: s3cmd sync down ${n}`);
    s3cmd(env, ['del', '--recursive', '--force', `s3://${bucket}/sync/`]);
  }
  // A server-side copy cold -> hot; then every object of every bucket: la --recursive.
  s3cmd(env, ['cp', 's3://cold/mp/big', 's3://s3cmd-hot/copied']);
  const laRows = (out: string) => out.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)).map((f) => `${f[3]} ${f[2]}`).sort();
  const big = files.big!.length;
  assert.deepEqual(laRows(s3cmd(env, ['la', '--recursive']).stdout), [`s3://cold/mp/big ${big}`, `s3://s3cmd-hot/copied ${big}`, `s3://s3cmd-hot/mp/big ${big}`], 'la --recursive after del --recursive and cp');
  s3cmd(env, ['setacl', '--acl-private', 's3://cold/mp/big']);
  const pub = s3cmd(env, ['setacl', '--acl-public', 's3://cold/mp/big'], false);
  assert.notEqual(pub.status, 0);
  assert.match(pub.stderr, /AccessControlListNotSupported.*The bucket does not allow ACLs: CoucheStor supports only the owner FULL_CONTROL/, 'a public ACL refused by name');
  // put -P (public-read): one 400, not retried (a 501 was, for ~45 s), nothing stored.
  const putPublic = s3cmd(env, ['put', '-P', path.join(src, 'one'), 's3://cold/public'], false);
  assert.notEqual(putPublic.status, 0, 's3cmd put -P');
  assert.match(putPublic.stderr, /AccessControlListNotSupported/, 's3cmd put -P names the refusal');
  assert.doesNotMatch(putPublic.stderr, /Retrying/, 's3cmd put -P is not retried');
  // s3cmd signurl makes Signature Version 2 presigned URLs: refused as such, not as "not signed".
  const url = s3cmd(env, ['signurl', 's3://cold/mp/big', '+600']).stdout.trim();
  const res = await fetch(url);
  assert.equal(res.status, 403);
  assert.match(await res.text(), /<Code>AccessDenied<\/Code><Message>Signature Version 2 presigned URLs \(AWSAccessKeyId, Signature, Expires\) are not supported/);
  s3cmd(env, ['rb', '--recursive', '--force', 's3://s3cmd-hot']);
  // s3cmd-hot gone, and no public object stored.
  assert.deepEqual(laRows(s3cmd(env, ['la', '--recursive']).stdout), [`s3://cold/mp/big ${big}`], 'after rb --recursive');
  t.diagnostic(`${Date.now() - started} ms`);
});
