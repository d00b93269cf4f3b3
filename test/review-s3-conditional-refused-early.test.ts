// Review of S3 conditional writes (R-G2): a write whose condition already
// fails when it arrives stores nothing of its body. Before, the condition was
// judged only in the index transaction that installs the object, after the
// whole body (or the whole copy source) had been written: a create-only PUT or
// CopyObject onto an existing key on a nearly full hot pool answered 503 "no
// space" instead of 412, a refused copy of a large object first copied all of
// it, and every refused body on a cold bucket left dead stripes behind. The
// flip still decides races (test/s3-conditional-writes.test.ts).
import { CopyObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { coldSegmentBytes, hotObjectFiles, outcome, signer, startS3HotAndCold, type S3Env } from './helpers/s3-env.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const HOT_CAPACITY_BYTES = 3 * MiB;
/** A hot pool with room for one 2 MiB object, not two: writing a second copy of it is 503 "no space". */
const CONFIG = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: ${HOT_CAPACITY_BYTES} }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
`;

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/**
 * A signed PUT of `body` with `headers`, then a GET of the same key, on ONE
 * keep-alive connection: the status lines of both answers and the GET's body.
 * A refused body must be read to its end for the second answer to come.
 */
async function putThenGetOnOneConnection(env: S3Env, pathname: string, body: Buffer, headers: Record<string, string>): Promise<{ statuses: number[]; got: Buffer }> {
  const u = new URL(env.endpoint);
  const base = { protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: pathname, query: {} };
  const put = (await signer(env).sign({ ...base, method: 'PUT', headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': String(body.length), ...headers } } as never)) as unknown as { headers: Record<string, string> };
  const get = (await signer(env).sign({ ...base, method: 'GET', headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } as never)) as unknown as { headers: Record<string, string> };
  const head = (method: string, h: Record<string, string>) => Buffer.from(`${method} ${pathname} HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = net.connect(Number(u.port), u.hostname);
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('end', () => resolve(Buffer.concat(chunks)));
    sock.on('error', reject);
    sock.write(head('PUT', put.headers));
    sock.write(body);
    // Not end(): a half-closed client may see its pipelined request dropped; the GET's `connection: close` ends it.
    sock.write(head('GET', { ...get.headers, connection: 'close' }));
  });
  // The answers one after another, each body as long as its Content-Length says.
  const statuses: number[] = [];
  let got: Buffer = Buffer.alloc(0);
  for (let at = 0; at < raw.length; ) {
    const end = raw.indexOf('\r\n\r\n', at);
    assert.ok(end > 0, `an answer without a header end: ${raw.subarray(at, at + 200).toString('latin1')}`);
    const head = raw.subarray(at, end).toString('latin1');
    statuses.push(Number(/^HTTP\/1\.1 (\d{3})/.exec(head)![1]));
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
    got = raw.subarray(end + 4, end + 4 + length);
    at = end + 4 + length;
  }
  return { statuses, got };
}

describe('s3 conditional writes: a condition that already fails stores nothing of the body', () => {
  let env: S3Env;
  const get = async (bucket: string, key: string) => Buffer.from(await (await env.sdk.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
  const put = (bucket: string, key: string, body: Buffer, cond: object = {}) => env.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...cond }));

  before(async () => {
    env = await startS3HotAndCold({ config: CONFIG });
  });
  after(async () => {
    await env.cleanup();
  });

  it('CopyObject of a 2 MiB object onto an existing key (If-None-Match: *, another If-Match) is 412 and If-Match onto no object 404, on a hot pool with no room for the copy (was 503 no space)', async () => {
    const src = randomBytes(2 * MiB);
    const dst = randomBytes(10 * KiB);
    await put('hot', 'src', src);
    await put('hot', 'dst', dst);
    const files = hotObjectFiles(env.daemon.dataDir);
    const copy = (to: string, cond: object) => env.sdk.send(new CopyObjectCommand({ Bucket: 'hot', Key: to, CopySource: 'hot/src', ...cond }));
    assert.deepEqual(await outcome(copy('dst', { IfNoneMatch: '*' })), [412, 'PreconditionFailed']);
    assert.deepEqual(await outcome(copy('dst', { IfMatch: `"${md5(src)}"` })), [412, 'PreconditionFailed']);
    assert.deepEqual(await outcome(copy('absent', { IfMatch: `"${md5(dst)}"` })), [404, 'NoSuchKey']);
    assert.ok((await get('hot', 'dst')).equals(dst));
    assert.deepEqual(hotObjectFiles(env.daemon.dataDir), files);
    // The condition holding, the copy is tried and the pool is too small for it: the refusal above was not about space.
    assert.deepEqual(await outcome(copy('dst', { IfMatch: `"${md5(dst)}"` })), [503, 'ServiceUnavailable']);
  });

  it('a 2 MiB PUT refused by If-None-Match: * is 412 on a pool with no room for it (was 503), its body read and dropped: the same connection answers the next request', async () => {
    const dst = await get('hot', 'dst');
    const refused = await putThenGetOnOneConnection(env, '/hot/dst', randomBytes(2 * MiB), { 'if-none-match': '*' });
    assert.deepEqual(refused.statuses, [412, 200]);
    assert.ok(refused.got.equals(dst), 'the GET after the refused PUT did not return the stored object');
    const wrongEtag = await putThenGetOnOneConnection(env, '/hot/dst', randomBytes(2 * MiB), { 'if-match': '"0123456789abcdef0123456789abcdef"' });
    assert.deepEqual(wrongEtag.statuses, [412, 200]);
    assert.ok(wrongEtag.got.equals(dst));
  });

  it('cold: a refused PUT writes no stripe (the cold segments do not grow)', async () => {
    const first = randomBytes(300 * KiB);
    await put('cold', 'k', first);
    const bytes = await coldSegmentBytes(env);
    assert.deepEqual(await outcome(put('cold', 'k', randomBytes(300 * KiB), { IfNoneMatch: '*' })), [412, 'PreconditionFailed']);
    assert.deepEqual(await outcome(put('cold', 'k', randomBytes(300 * KiB), { IfMatch: '"0123456789abcdef0123456789abcdef"' })), [412, 'PreconditionFailed']);
    assert.deepEqual(await outcome(put('cold', 'none', randomBytes(300 * KiB), { IfMatch: `"${md5(first)}"` })), [404, 'NoSuchKey']);
    assert.equal(await coldSegmentBytes(env), bytes, 'a refused body was written to the cold segments');
    assert.ok((await get('cold', 'k')).equals(first));
  });
});
