// S3 objects and multipart parts whose bytes were on a hot pool replaced with
// `couchestor pools replace --discard-volumes` (marked lost) answer as lost on
// every path that would present them as data: HEAD (500 with the reason in
// x-amz-error-code / x-amz-error-message, as a HEAD carries no body),
// GetObjectAttributes, ranged GET, CopyObject and UploadPartCopy from them;
// ListParts lists a lost part with an ETag no upload has, and
// CompleteMultipartUpload naming one is 400 InvalidPart saying which part and
// why, the upload kept so the part can be uploaded again. Real daemon, the
// Debian aws cli and @aws-sdk/client-s3.
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  GetObjectAttributesCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test } from 'node:test';
import { MiB, patternBytes } from './helpers/cold.js';
import { s3ObjectOnHot1 } from './helpers/missing-pool.js';
import { aws, outcome, type S3Env } from './helpers/s3-env.js';

const LOST = /lost with pool hot-1's disk \(replaced with `pools replace --discard-volumes`\)/;
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** [HTTP status, S3 code, message] of an SDK call that must fail. */
async function refusal(p: Promise<unknown>): Promise<[number | undefined, string, string]> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return [e.$metadata?.httpStatusCode, e.name, e.message];
  }
  assert.fail('the call succeeded');
}

/** A cli call that must fail: the HTTP status (--debug log), S3 code and message it printed (a 5xx adds "(reached max retries: N)"). */
function awsFail(env: S3Env, args: string[]): { httpStatus: number | undefined; code: string | undefined; message: string } {
  const r = aws(env, [...args, '--debug']);
  assert.notEqual(r.status, 0, `aws ${args.join(' ')} succeeded:\n${r.stdout}`);
  const m = /An error occurred \(([A-Za-z0-9]+)\) when calling the \w+ operation(?: \(reached max retries: \d+\))?: (.*)/.exec(r.stderr);
  const statuses = [...r.stderr.matchAll(/HTTP\/1\.1" (\d{3}) /g)];
  return { httpStatus: statuses.length > 0 ? Number(statuses.at(-1)![1]) : undefined, code: m?.[1], message: m?.[2] ?? '' };
}

test('an S3 object and parts lost with a replaced hot disk: HEAD, attributes, ranges and copies answer the loss; completing with a lost part is 400 InvalidPart, the upload kept and completable once the part is uploaded again', async (t) => {
  const started = Date.now();
  const body = patternBytes(2 * MiB, 0x53a);
  const { env, hot1 } = await s3ObjectOnHot1(t, 'k0', body);
  const d = env.daemon;
  // A 500 is retried by the cli: one attempt, so each refusal is one request.
  fs.writeFileSync(path.join(env.home, 'config'), '[default]\nmax_attempts = 1\nretry_mode = standard\n');
  const sdk = env.sdk;
  // Kept in its index record (inline): no byte on hot-1, not lost.
  const small = Buffer.from('inline bytes, kept in the index');
  await sdk.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'inline', Body: small }));
  // A multipart upload whose part is on hot-1 (one part: it may be small), and one to copy a part into.
  const part1 = patternBytes(256 * 1024, 0x53b);
  const { UploadId: mp } = await sdk.send(new CreateMultipartUploadCommand({ Bucket: 'bkt', Key: 'mp' }));
  const etags = [];
  for (const [n, b] of [part1].entries()) etags.push((await sdk.send(new UploadPartCommand({ Bucket: 'bkt', Key: 'mp', UploadId: mp, PartNumber: n + 1, Body: b }))).ETag!);
  const { UploadId: into } = await sdk.send(new CreateMultipartUploadCommand({ Bucket: 'bkt', Key: 'into' }));

  // hot-1's disk died; a new, empty one replaces it, its objects' data discarded.
  fs.renameSync(hot1, `${hot1}.dead`);
  t.after(() => fs.rmSync(`${hot1}.dead`, { recursive: true, force: true }));
  fs.mkdirSync(hot1);
  const replaced = d.cli('pools', 'replace', 'hot-1', '--discard-volumes', '--json');
  assert.equal(replaced.status, 0, replaced.stderr);

  t.diagnostic(`set up and replaced: ${Date.now() - started} ms`);
  // HEAD: not the old size and ETag with 200, but the GET's 500 and its reason in headers.
  const head = aws(env, ['s3api', 'head-object', '--bucket', 'bkt', '--key', 'k0', '--debug']);
  assert.notEqual(head.status, 0, `head-object of a lost object succeeded:\n${head.stdout}`);
  assert.match(head.stderr, /An error occurred \(500\) when calling the HeadObject operation/);
  assert.match(head.stderr, /'x-amz-error-code': 'InternalError'/);
  const said = /'x-amz-error-message': (?:'([^']*)'|"([^"]*)")/.exec(head.stderr);
  assert.match(said?.[1] ?? said?.[2] ?? '', LOST);
  assert.match(head.stderr, /'x-minio-error-code': 'InternalError'/);
  // The message is percent-encoded where a header cannot carry it as is, and so is '%': it decodes back
  // exactly (here an Authorization header's service the message quotes; a key or pool name can be as odd).
  const odd = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const u = new URL(env.endpoint);
    const credential = `${env.accessKeyId}/20261128/us-east-1/s3 caf\u00e9 100%/aws4_request`;
    const authorization = `AWS4-HMAC-SHA256 Credential=${credential}, SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}`;
    const r = http.request({ host: u.hostname, port: u.port, method: 'HEAD', path: '/bkt/k0', agent: false, headers: { authorization, 'x-amz-date': '20261128T000000Z' } }, (res) => {
      res.resume();
      resolve(res);
    });
    r.on('error', reject);
    r.end();
  });
  assert.equal(odd.statusCode, 400);
  const oddMessage = odd.headers['x-amz-error-message'] as string;
  assert.match(decodeURIComponent(oddMessage), /incorrect service "s3 café 100%"/);
  assert.equal(odd.headers['x-minio-error-desc'], `"${oddMessage}"`);
  assert.equal((await sdk.send(new HeadObjectCommand({ Bucket: 'bkt', Key: 'inline' }))).ContentLength, small.length, 'an inline object is not lost');
  // (The SDK reads no code from a HEAD without a body: 'Unknown'.)
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'bkt', Key: 'k0', Range: 'bytes=0-0' }))))[0], 500);
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'bkt', Key: 'k0', PartNumber: 1 }))))[0], 500);

  // GetObjectAttributes, a ranged GET, and both copies from it: the loss, nothing written.
  const attrs = await refusal(sdk.send(new GetObjectAttributesCommand({ Bucket: 'bkt', Key: 'k0', ObjectAttributes: ['ETag', 'ObjectSize'] })));
  assert.deepEqual(attrs.slice(0, 2), [500, 'InternalError']);
  assert.match(attrs[2], LOST);
  assert.deepEqual((await refusal(sdk.send(new GetObjectCommand({ Bucket: 'bkt', Key: 'k0', Range: 'bytes=100-199' })))).slice(0, 2), [500, 'InternalError']);
  const copy = await refusal(sdk.send(new CopyObjectCommand({ Bucket: 'bkt', Key: 'copy', CopySource: 'bkt/k0' })));
  assert.deepEqual(copy.slice(0, 2), [500, 'InternalError']);
  assert.match(copy[2], LOST);
  assert.equal((await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'bkt', Key: 'copy' }))))[0], 404, 'no copy of a lost object');
  const partCopy = await refusal(sdk.send(new UploadPartCopyCommand({ Bucket: 'bkt', Key: 'into', UploadId: into, PartNumber: 1, CopySource: 'bkt/k0' })));
  assert.deepEqual(partCopy.slice(0, 2), [500, 'InternalError']);
  assert.match(partCopy[2], LOST);
  assert.equal(((await sdk.send(new ListPartsCommand({ Bucket: 'bkt', Key: 'into', UploadId: into }))).Parts ?? []).length, 0, 'no part copied from a lost object');

  // ListParts: the lost part is listed (a gap would complete an object without them), with an
  // ETag no upload has, so a client resuming by ETag (s3cmd --continue-put) uploads them again.
  const listed = await sdk.send(new ListPartsCommand({ Bucket: 'bkt', Key: 'mp', UploadId: mp }));
  assert.deepEqual(listed.Parts?.map((p) => [p.PartNumber, p.ETag, p.Size]), [[1, '"lost-part-data"', part1.length]]);

  // Completing with the part's own ETag: 400 InvalidPart naming part 1 and why; nothing published.
  const parts = (tags: string[]) => JSON.stringify({ Parts: tags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) });
  const refused = awsFail(env, ['s3api', 'complete-multipart-upload', '--bucket', 'bkt', '--key', 'mp', '--upload-id', mp!, '--multipart-upload', parts(etags)]);
  assert.deepEqual([refused.httpStatus, refused.code], [400, 'InvalidPart']);
  assert.match(refused.message, /part 1/);
  assert.match(refused.message, LOST);
  assert.match(refused.message, /[Uu]pload part 1 again/);
  assert.deepEqual(await outcome(sdk.send(new HeadObjectCommand({ Bucket: 'bkt', Key: 'mp' }))), [404, 'NotFound'], 'a refused completion publishes nothing');
  assert.deepEqual((await sdk.send(new ListMultipartUploadsCommand({ Bucket: 'bkt' }))).Uploads?.map((u) => u.UploadId).sort(), [into, mp].sort(), 'the upload is kept');

  // The part uploaded again (onto the new disk): the same completion now succeeds, bytes exact.
  for (const [n, b] of [part1].entries()) {
    const again = await sdk.send(new UploadPartCommand({ Bucket: 'bkt', Key: 'mp', UploadId: mp, PartNumber: n + 1, Body: b }));
    assert.equal(again.ETag, etags[n]);
  }
  await sdk.send(new CompleteMultipartUploadCommand({ Bucket: 'bkt', Key: 'mp', UploadId: mp, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
  const got = await sdk.send(new GetObjectCommand({ Bucket: 'bkt', Key: 'mp' }));
  const bytes = Buffer.from(await got.Body!.transformToByteArray());
  assert.equal(md5(bytes), md5(part1));
  // The lost object still answers its loss (it is not healed by the new disk); DELETE removes it.
  assert.deepEqual((await refusal(sdk.send(new GetObjectCommand({ Bucket: 'bkt', Key: 'k0' })))).slice(0, 2), [500, 'InternalError']);
  // A PUT over it makes it whole again (README: "until DELETE or a new PUT over them"); the hot pools
  // count only bytes on their disks now: the new k0 and mp's part, nothing for what was lost.
  const fresh = patternBytes(MiB, 0x53c);
  await sdk.send(new PutObjectCommand({ Bucket: 'bkt', Key: 'k0', Body: fresh }));
  assert.equal((await sdk.send(new HeadObjectCommand({ Bucket: 'bkt', Key: 'k0' }))).ContentLength, fresh.length);
  assert.equal(md5(Buffer.from(await (await sdk.send(new GetObjectCommand({ Bucket: 'bkt', Key: 'k0' }))).Body!.transformToByteArray())), md5(fresh));
  const pools = JSON.parse(d.cli('pools', 'list', '--json').stdout) as { name: string; usedBytes: number }[];
  assert.equal(pools.filter((p) => p.name.startsWith('hot-')).reduce((sum, p) => sum + p.usedBytes, 0), fresh.length + part1.length, JSON.stringify(pools));
  t.diagnostic(`${Date.now() - started} ms`);
});
