// DeleteObjects and CompleteMultipartUpload bodies: bounded by what a legal
// request can be (1000 keys, 10000 parts), refused with S3's codes past it, and
// parsed as they arrive so a maximal legal body does not hold other clients:
// the daemon's event-loop delay (its /metrics, perf_hooks.monitorEventLoopDelay
// through prom-client) is measured while one is parsed and a second client reads.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateMultipartUploadCommand, GetObjectCommand, ListPartsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { aws, awsOk, errorCode, rawRequest, scrapeMetrics, signer, startS3, type RawAnswer, type S3Env } from './helpers/s3-env.js';

/** The bounds server.ts derives (1000 objects x 8 KiB, 10000 parts x 512 B, + 4 KiB): the test pins them. */
const MAX_DELETE_BODY_BYTES = 1000 * 8 * 1024 + 4096;
const MAX_COMPLETE_BODY_BYTES = 10_000 * 512 + 4096;
const NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"';
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** A signed request on its own connection, body in 64 KiB writes as a client streams it. */
async function raw(env: S3Env, method: string, pathname: string, query: Record<string, string>, body: Buffer, opts: { chunked?: boolean } = {}): Promise<RawAnswer> {
  const u = new URL(env.endpoint);
  const headers: Record<string, string> = { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-md5': createHash('md5').update(body).digest('base64') };
  if (!opts.chunked) headers['content-length'] = String(body.length);
  const s = (await signer(env).sign({ method, protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: pathname, query, headers } as never)) as unknown as { headers: Record<string, string> };
  const qs = new URLSearchParams(query).toString();
  return rawRequest(env, method, `${pathname}${qs ? `?${qs}` : ''}`, s.headers, (r) => {
    let off = 0;
    const writeMore = () => {
      while (off < body.length) {
        const piece = body.subarray(off, off + 64 * 1024);
        off += piece.length;
        if (!r.write(piece)) return void r.once('drain', writeMore);
      }
      r.end();
    };
    writeMore();
  });
}

/** The daemon's event-loop delay maximum since the previous scrape (prom-client resets it per scrape), in ms. */
async function lagMaxMs(env: S3Env): Promise<number> {
  const text = await scrapeMetrics(env);
  const m = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text);
  assert.ok(m, 'the daemon exports nodejs_eventloop_lag_max_seconds');
  return Number(m[1]) * 1000;
}

/**
 * Another client's small GETs, one after another, while `work` runs: each
 * must answer 200 with the probe's bytes. The daemon's largest event-loop
 * delay over the run is read from /metrics.
 */
async function whileProbing<T>(env: S3Env, bucket: string, work: () => Promise<T>): Promise<{ result: T; probes: number; probeMaxMs: number; lagMaxMs: number; elapsedMs: number }> {
  await lagMaxMs(env); // resets the daemon's histogram
  let done = false;
  let probes = 0;
  let probeMaxMs = 0;
  const loop = (async () => {
    while (!done) {
      const t0 = performance.now();
      const got = await env.sdk.send(new GetObjectCommand({ Bucket: bucket, Key: 'probe' }));
      assert.equal(await got.Body!.transformToString(), 'probe bytes');
      probeMaxMs = Math.max(probeMaxMs, performance.now() - t0);
      probes++;
    }
  })();
  const t0 = performance.now();
  const result = await work().finally(() => (done = true));
  const elapsedMs = performance.now() - t0;
  await loop;
  return { result, probes, probeMaxMs, lagMaxMs: await lagMaxMs(env), elapsedMs };
}

/** A legal Delete at its largest in practice: 1000 objects, each key 1024 bytes, 1020 of them `"` written as &quot;, pretty-printed. */
function maximalDelete(): Buffer {
  let x = `<?xml version="1.0" encoding="UTF-8"?>\n<Delete ${NS}>\n  <Quiet>false</Quiet>`;
  for (let i = 0; i < 1000; i++) x += `\n  <Object>\n    <Key>${String(i).padStart(4, '0')}${'&quot;'.repeat(1020)}</Key>\n    <VersionId>null</VersionId>\n  </Object>`;
  return Buffer.from(`${x}\n</Delete>\n`);
}

/** A CompleteMultipartUpload listing `parts` parts with quoted ETags (as references) and two checksums each, pretty-printed. */
function completeBody(parts: number): Buffer {
  const sums = `\n    <ChecksumCRC32C>${randomBytes(4).toString('base64')}</ChecksumCRC32C>\n    <ChecksumSHA256>${randomBytes(32).toString('base64')}</ChecksumSHA256>`;
  let x = `<CompleteMultipartUpload ${NS}>`;
  for (let n = 1; n <= parts; n++) x += `\n  <Part>\n    <PartNumber>${n}</PartNumber>\n    <ETag>&quot;${randomBytes(16).toString('hex')}&quot;</ETag>${sums}\n  </Part>`;
  return Buffer.from(`${x}\n</CompleteMultipartUpload>`);
}

describe('DeleteObjects and CompleteMultipartUpload bodies', () => {
  let env: S3Env;
  let work: string;
  const B = 'bodies';
  const put = (key: string, body = 'x') => env.sdk.send(new PutObjectCommand({ Bucket: B, Key: key, Body: body }));
  const exists = async (key: string) => (await env.sdk.send(new GetObjectCommand({ Bucket: B, Key: key })).then(() => true, () => false));

  before(async () => {
    env = await startS3();
    work = fs.mkdtempSync(path.join(os.tmpdir(), 's3-xml-bodies-'));
    awsOk(env, ['s3api', 'create-bucket', '--bucket', B]);
    await put('probe', 'probe bytes');
  });
  after(async () => {
    await env.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('aws s3api delete-objects: 1000 keys are deleted, 1001 are refused with MalformedXML and nothing is deleted', async () => {
    const real = Array.from({ length: 20 }, (_, i) => `real/${i}`);
    for (const k of real) await put(k);
    const keys = [...real, ...Array.from({ length: 980 }, (_, i) => `missing/${i}`)];
    const file = path.join(work, 'delete.json');
    fs.writeFileSync(file, JSON.stringify({ Objects: keys.map((Key) => ({ Key })) }));
    const done = awsOk(env, ['s3api', 'delete-objects', '--bucket', B, '--delete', `file://${file}`]);
    assert.equal(done.Deleted.length, 1000);
    assert.deepEqual(done.Deleted.map((d: { Key: string }) => d.Key).sort(), [...keys].sort());
    assert.equal(done.Errors, undefined);
    for (const k of real) assert.equal(await exists(k), false, k);

    for (const k of real) await put(k);
    fs.writeFileSync(file, JSON.stringify({ Objects: [...keys, 'one-too-many'].map((Key) => ({ Key })) }));
    const r = aws(env, ['s3api', 'delete-objects', '--bucket', B, '--delete', `file://${file}`]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /MalformedXML/);
    assert.match(r.stderr, /1 to 1000 objects/);
    for (const k of real) assert.equal(await exists(k), true, k);
  });

  it('a maximal legal DeleteObjects body (~6 MiB, a million references) is taken whole, parsed while other clients are served', async (t) => {
    const body = maximalDelete();
    assert.ok(body.length > 4 * 1024 * 1024 && body.length <= MAX_DELETE_BODY_BYTES, `${body.length} bytes`);
    // The same probe load alone, about as long as the body takes below: the machine's own noise.
    const baseline = await whileProbing(env, B, () => new Promise((r) => setTimeout(r, 2000)));
    const lags: number[] = [];
    for (let round = 0; round < 3; round++) {
      await put(`0007${'"'.repeat(1020)}`, 'to be deleted');
      const run = await whileProbing(env, B, () => raw(env, 'POST', `/${B}`, { delete: '' }, body));
      t.diagnostic(`body ${body.length} B in ${run.elapsedMs.toFixed(0)} ms; daemon event-loop delay max ${run.lagMaxMs.toFixed(1)} ms (probe alone: ${baseline.lagMaxMs.toFixed(1)} ms); ${run.probes} probe GETs, slowest ${run.probeMaxMs.toFixed(1)} ms (alone: ${baseline.probeMaxMs.toFixed(1)} ms)`);
      assert.equal(run.result.status, 200, run.result.body.slice(0, 300));
      const deleted = [...run.result.body.matchAll(/<Deleted><Key>([^<]*)<\/Key><VersionId>null<\/VersionId><\/Deleted>/g)].map((m) => m[1]!);
      assert.equal(deleted.length, 1000);
      assert.equal(deleted[7], `0007${'&quot;'.repeat(1020)}`);
      assert.equal(await exists(`0007${'"'.repeat(1020)}`), false);
      assert.ok(run.probes >= 1, 'another client was served while the body was parsed');
      lags.push(run.lagMaxMs);
    }
    // Parsed in one run, this body held the loop 170-340 ms in process (the old 4 MiB bound
    // refused it; a 3.7 MiB one held the daemon 140-250 ms); in 16 KiB slices a turn takes
    // 0.1-0.4 ms. The bound leaves room for the shared machine's own delays (the probe alone
    // saw 15-60 ms under load 6-10).
    assert.ok(median(lags) < 150, `event-loop delay ${lags.join('/')} ms while the body was parsed`);
  });

  it('DeleteObjects past the bounds: one byte over (declared or streamed), a 1001st Object, more elements than any legal body: refused, the daemon serves on', async () => {
    await put('kept');
    const keep = `<Object><Key>kept</Key></Object>`;
    const over = Buffer.from(`<Delete>${keep}${' '.repeat(MAX_DELETE_BODY_BYTES - 17 - keep.length + 1)}</Delete>`);
    assert.equal(over.length, MAX_DELETE_BODY_BYTES + 1);
    const declared = await raw(env, 'POST', `/${B}`, { delete: '' }, over);
    assert.deepEqual([declared.status, errorCode(declared.body)], [400, 'MaxMessageLengthExceeded'], declared.body);
    assert.match(declared.body, new RegExp(`at most ${MAX_DELETE_BODY_BYTES} bytes`));
    const streamed = await raw(env, 'POST', `/${B}`, { delete: '' }, over, { chunked: true });
    assert.ok(streamed.status === -1 || (streamed.status === 400 && errorCode(streamed.body) === 'MaxMessageLengthExceeded'), `${streamed.status} ${streamed.body.slice(0, 200)}`);

    const tooMany = Buffer.from(`<Delete>${Array.from({ length: 1001 }, (_, i) => `<Object><Key>k${i}</Key></Object>`).join('')}${keep}</Delete>`);
    const many = await raw(env, 'POST', `/${B}`, { delete: '' }, tooMany);
    assert.deepEqual([many.status, errorCode(many.body)], [400, 'MalformedXML']);
    assert.match(many.body, /1 to 1000 objects/);
    const junk = Buffer.from(`<Delete>${keep}${'<Quiet/>'.repeat(6002)}</Delete>`);
    const elements = await raw(env, 'POST', `/${B}`, { delete: '' }, junk);
    assert.deepEqual([elements.status, errorCode(elements.body)], [400, 'MalformedXML']);
    assert.match(elements.body, /more than 6002 elements/);
    const wrongRoot = await raw(env, 'POST', `/${B}`, { delete: '' }, Buffer.from(`<Tagging>${keep}</Tagging>`));
    assert.deepEqual([wrongRoot.status, errorCode(wrongRoot.body)], [400, 'MalformedXML']);
    // A conditional delete is judged (ignored, it would delete unconditionally): another ETag is an Error for its key.
    const conditional = await raw(env, 'POST', `/${B}`, { delete: '' }, Buffer.from(`<Delete><Object><Key>kept</Key><ETag>"0123"</ETag></Object></Delete>`));
    assert.equal(conditional.status, 200);
    assert.match(conditional.body, /<Error><Key>kept<\/Key><Code>PreconditionFailed<\/Code>/);
    assert.equal(await exists('kept'), true);
    assert.equal(await exists('probe'), true);
  });

  it('CompleteMultipartUpload: 10000 parts are parsed and judged by the store, 10001 and one byte over are refused; the upload is kept', async (t) => {
    const { UploadId } = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: B, Key: 'mp' }));
    const q = { uploadId: UploadId! };
    const body = completeBody(10_000);
    assert.ok(body.length <= MAX_COMPLETE_BODY_BYTES, `${body.length} bytes`);
    const lags: number[] = [];
    for (let round = 0; round < 3; round++) {
      const run = await whileProbing(env, B, () => raw(env, 'POST', `/${B}/mp`, q, body));
      t.diagnostic(`body ${body.length} B in ${run.elapsedMs.toFixed(0)} ms; daemon event-loop delay max ${run.lagMaxMs.toFixed(1)} ms; ${run.probes} probe GETs, slowest ${run.probeMaxMs.toFixed(1)} ms`);
      // Parsed whole: the store's answer (no part 1 was uploaded), not a body refusal.
      assert.deepEqual([run.result.status, errorCode(run.result.body)], [400, 'InvalidPart'], run.result.body);
      lags.push(run.lagMaxMs);
    }
    // Parsed in one run: 80-210 ms in the daemon under load 6-9.
    assert.ok(median(lags) < 150, `event-loop delay ${lags.join('/')} ms while the body was parsed`);

    const tooMany = await raw(env, 'POST', `/${B}/mp`, q, completeBody(10_001));
    assert.deepEqual([tooMany.status, errorCode(tooMany.body)], [400, 'MalformedXML']);
    assert.match(tooMany.body, /at most 10000 parts/);
    const over = Buffer.from(`<CompleteMultipartUpload>${' '.repeat(MAX_COMPLETE_BODY_BYTES - 51 + 1)}</CompleteMultipartUpload>`);
    assert.equal(over.length, MAX_COMPLETE_BODY_BYTES + 1);
    const big = await raw(env, 'POST', `/${B}/mp`, q, over);
    assert.deepEqual([big.status, errorCode(big.body)], [400, 'MaxMessageLengthExceeded']);
    // The refusals were that client's only: the upload is still there and completes.
    const part = randomBytes(1000);
    const up = await raw(env, 'PUT', `/${B}/mp`, { partNumber: '1', uploadId: UploadId! }, part);
    assert.equal(up.status, 200);
    const listed = await env.sdk.send(new ListPartsCommand({ Bucket: B, Key: 'mp', UploadId }));
    assert.deepEqual(listed.Parts?.map((p) => [p.PartNumber, p.Size]), [[1, 1000]]);
    const etag = listed.Parts![0]!.ETag!;
    const ok = await raw(env, 'POST', `/${B}/mp`, q, Buffer.from(`<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${etag}</ETag></Part></CompleteMultipartUpload>`));
    assert.equal(ok.status, 200, ok.body);
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: B, Key: 'mp' }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(part));
  });
});
