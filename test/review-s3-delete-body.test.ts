// Review of the streamed DeleteObjects body (server.ts readXmlBody/deleteObjects,
// xml.ts): a body must delete exactly the keys it names, and nothing when it is
// refused. Real daemon, raw signed HTTP where the aws cli cannot say it, the cli where it can.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { awsOk, errorCode, rawRequest, scrapeMetrics, signedChunkedBody, signer, startS3, type RawAnswer, type S3Env } from './helpers/s3-env.js';

/** A signed POST ?delete on its own connection; `cutAfterBytes` sends that much of the body and hangs up. */
async function postDelete(env: S3Env, bucket: string, body: Buffer, opts: { headers?: Record<string, string>; cutAfterBytes?: number } = {}): Promise<RawAnswer> {
  const u = new URL(env.endpoint);
  const headers: Record<string, string> = { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': String(body.length), 'content-md5': createHash('md5').update(body).digest('base64'), ...opts.headers };
  const query = { delete: '' };
  const s = (await signer(env).sign({ method: 'POST', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${bucket}`, query, headers } as never)) as unknown as { headers: Record<string, string> };
  return rawRequest(env, 'POST', `/${bucket}?delete`, s.headers, (r, unanswered) => {
    if (opts.cutAfterBytes !== undefined) {
      r.write(body.subarray(0, opts.cutAfterBytes), () => setImmediate(() => r.destroy()));
      r.on('close', unanswered);
    } else {
      r.end(body);
    }
  });
}

describe('review: a DeleteObjects body deletes exactly what it names', () => {
  let env: S3Env;
  let work: string;
  const B = 'review-delete-body';
  const put = (key: string) => env.sdk.send(new PutObjectCommand({ Bucket: B, Key: key, Body: 'x' }));
  const exists = (key: string) => env.sdk.send(new HeadObjectCommand({ Bucket: B, Key: key })).then(() => true, () => false);

  before(async () => {
    env = await startS3();
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-s3-delete-body-'));
    awsOk(env, ['s3api', 'create-bucket', '--bucket', B]);
  });
  after(async () => {
    await env.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('an Object without a Key refuses the whole body before any delete (the keys listed before it are kept)', async () => {
    await put('first');
    const r = await postDelete(env, B, Buffer.from('<Delete><Object><Key>first</Key></Object><Object><VersionId>null</VersionId></Object></Delete>'));
    assert.deepEqual([r.status, errorCode(r.body)], [400, 'MalformedXML'], r.body);
    assert.equal(await exists('first'), true, 'a refused body deleted a key it listed');
  });

  it('an Object with two Keys is refused, neither deleted (which one it meant is not ours to guess)', async () => {
    await put('one');
    await put('two');
    const r = await postDelete(env, B, Buffer.from('<Delete><Object><Key>one</Key><Key>two</Key></Object></Delete>'));
    assert.deepEqual([r.status, errorCode(r.body)], [400, 'MalformedXML'], r.body);
    assert.equal(await exists('one'), true);
    assert.equal(await exists('two'), true);
  });

  it('a surrogate character reference is malformed XML, never the key U+FFFD', async () => {
    await put('\uFFFD');
    await put('a\uFFFD');
    for (const key of ['&#xD800;', '&#55296;', 'a&#xDC00;']) {
      const r = await postDelete(env, B, Buffer.from(`<Delete><Object><Key>${key}</Key></Object></Delete>`));
      assert.deepEqual([r.status, errorCode(r.body)], [400, 'MalformedXML'], `${key}: ${r.body}`);
    }
    assert.equal(await exists('\uFFFD'), true, 'a lone surrogate deleted the key U+FFFD');
    assert.equal(await exists('a\uFFFD'), true, 'a lone surrogate deleted the key a U+FFFD');
  });

  it('a body that is not UTF-8 is malformed XML, never a key with U+FFFD in it', async () => {
    await put('b\uFFFD');
    await put('c\uFFFD\uFFFD\uFFFD');
    for (const bad of [Buffer.from([0x62, 0xff]), Buffer.from([0x63, 0xed, 0xa0, 0x80])]) {
      const r = await postDelete(env, B, Buffer.concat([Buffer.from('<Delete><Object><Key>'), bad, Buffer.from('</Key></Object></Delete>')]));
      assert.deepEqual([r.status, errorCode(r.body)], [400, 'MalformedXML'], `${bad.toString('hex')}: ${r.body}`);
    }
    assert.equal(await exists('b\uFFFD'), true, 'bytes ff deleted the key b U+FFFD');
    assert.equal(await exists('c\uFFFD\uFFFD\uFFFD'), true, 'an encoded surrogate deleted a key of U+FFFDs');
  });

  it('a body declaring another encoding than UTF-8 is refused, never read as UTF-8 (other characters, another key)', async () => {
    await put('\u00e9');
    await put('\u00c3\u00a9');
    // The client means the key Ã© (bytes c3 a9 in ISO-8859-1); read as UTF-8 they are é.
    for (const decl of ['ISO-8859-1', "iso-8859-1' standalone='yes"]) {
      const body = Buffer.from(`<?xml version="1.0" encoding='${decl}'?><Delete><Object><Key>\u00c3\u00a9</Key></Object></Delete>`, 'latin1');
      const r = await postDelete(env, B, body);
      assert.deepEqual([r.status, errorCode(r.body)], [400, 'MalformedXML'], `${decl}: ${r.body}`);
    }
    assert.equal(await exists('\u00e9'), true, 'a latin-1 body deleted the key é');
    assert.equal(await exists('\u00c3\u00a9'), true);
    const utf8 = await postDelete(env, B, Buffer.from(`<?xml version="1.0" encoding="UTF-8"?><Delete><Object><Key>\u00e9</Key></Object></Delete>`));
    assert.equal(utf8.status, 200, utf8.body);
    assert.equal(await exists('\u00e9'), false);
  });

  it('a 4-byte character cut by the 16 KiB parse slice, and keys with spaces and newlines at their ends, are deleted exactly', async () => {
    // The emoji's bytes straddle offset 16384 of the body (the server parses 16 KiB slices).
    const pad = 'k'.repeat(1000);
    const head = `<Delete>${' '.repeat(16384 - 2 - pad.length - 21)}<Object><Key>`;
    const split = `${pad}\u{1F600}`;
    await put(split);
    await put(pad);
    const body = Buffer.from(`${head}${split}</Key></Object></Delete>`);
    assert.equal(body.indexOf(Buffer.from('\u{1F600}')), 16382);
    const r = await postDelete(env, B, body);
    assert.equal(r.status, 200, r.body);
    assert.equal(await exists(split), false);
    assert.equal(await exists(pad), true);

    // S3 keeps a key's whitespace exactly: the aws cli sends these as written, and reads the
    // answer with expat, which takes a raw CR for LF (so 'cr\r' must be echoed as a reference).
    const spaced = [' lead', 'trail ', '\nnl', 'nl\n', '\tboth\t', 'cr\r'];
    const bare = ['lead', 'trail', 'nl', 'both', 'cr'];
    for (const k of [...spaced, ...bare]) await put(k);
    const file = path.join(work, 'spaced.json');
    fs.writeFileSync(file, JSON.stringify({ Objects: spaced.map((Key) => ({ Key })) }));
    const done = awsOk(env, ['s3api', 'delete-objects', '--bucket', B, '--delete', `file://${file}`]);
    assert.deepEqual(done.Deleted.map((d: { Key: string }) => d.Key).sort(), [...spaced].sort());
    for (const k of spaced) assert.equal(await exists(k), false, JSON.stringify(k));
    for (const k of bare) assert.equal(await exists(k), true, JSON.stringify(k));
  });

  it('a body in one-byte aws-chunked chunks costs the daemon about its size in memory, not a string node per chunk', async (t) => {
    await put('tiny-chunks');
    const chunks = 4_000_000;
    const head = Buffer.from('<Delete><Object><Key>tiny-chunks</Key></Object>');
    const tail = Buffer.from('</Delete>');
    const wire = (data: Buffer) => Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n')]);
    // Whitespace inside the root, one byte a chunk: fed one by one, each was appended to the root's text (a rope node of ~30 bytes per byte).
    const spaceRun = Buffer.alloc(6 * 65536);
    for (let i = 0; i < 65536; i++) spaceRun.write('1\r\n \r\n', i * 6, 'latin1');
    const runs = Math.ceil(chunks / 65536);
    const decodedBytes = head.length + runs * 65536 + tail.length;
    const u = new URL(env.endpoint);
    const headers: Record<string, string> = {
      host: u.host,
      'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
      'content-encoding': 'aws-chunked',
      'x-amz-decoded-content-length': String(decodedBytes),
    };
    const decodedMd5 = createHash('md5').update(head);
    for (let i = 0; i < runs; i++) decodedMd5.update(Buffer.alloc(65536, ' '));
    headers['content-md5'] = decodedMd5.update(tail).digest('base64');
    const query = { delete: '' };
    const s = (await signer(env).sign({ method: 'POST', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${B}`, query, headers } as never)) as unknown as { headers: Record<string, string> };
    let lagMaxMs = 0;
    const heapUsedBytes = async () => {
      const text = await scrapeMetrics(env);
      lagMaxMs = Math.max(lagMaxMs, Number(/^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text)![1]) * 1000);
      return Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(text)![1]);
    };
    const baseline = await heapUsedBytes();
    lagMaxMs = 0;
    const t0 = performance.now();
    let peak = baseline;
    let sending = true;
    const sampler = (async () => {
      while (sending) {
        peak = Math.max(peak, await heapUsedBytes());
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const answer = await rawRequest(env, 'POST', `/${B}?delete`, { ...s.headers, 'transfer-encoding': 'chunked' }, (r) => {
      const writes = [wire(head), ...Array.from({ length: runs }, () => spaceRun), Buffer.concat([wire(tail), Buffer.from('0\r\n\r\n')])];
      const more = () => {
        while (writes.length > 1) if (!r.write(writes.shift())) return void r.once('drain', more);
        r.end(writes.shift());
      };
      more();
    });
    const elapsedMs = performance.now() - t0;
    sending = false;
    await sampler;
    const growthMiB = (peak - baseline) / 1048576;
    t.diagnostic(`heap used ${(baseline / 1048576).toFixed(0)} MiB before, peak ${(peak / 1048576).toFixed(0)} MiB while the body was parsed (${elapsedMs.toFixed(0)} ms, event-loop delay max ${lagMaxMs.toFixed(0)} ms)`);
    assert.equal(answer.status, 200, answer.body);
    assert.equal(await exists('tiny-chunks'), false);
    assert.ok(growthMiB < 48, `the daemon's heap grew ${growthMiB.toFixed(0)} MiB for a ${(decodedBytes / 1048576).toFixed(1)} MiB body`);
  });

  it('a signed aws-chunked body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) with one bad chunk signature deletes nothing, even the last chunk', async () => {
    await put('signed-kept');
    const data = [Buffer.from('<Delete><Object><Key>signed-kept</Key></Object>'), Buffer.from('</Delete>')];
    const send = async (corruptChunk: number): Promise<RawAnswer> => {
      const date = new Date();
      const u = new URL(env.endpoint);
      const headers: Record<string, string> = {
        host: u.host,
        'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
        'content-encoding': 'aws-chunked',
        'x-amz-decoded-content-length': String(data.reduce((n, b) => n + b.length, 0)),
        'content-md5': createHash('md5').update(Buffer.concat(data)).digest('base64'),
      };
      const query = { delete: '' };
      const s = (await signer(env).sign({ method: 'POST', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${B}`, query, headers } as never, { signingDate: date })) as unknown as { headers: Record<string, string> };
      const body = await signedChunkedBody(env, s.headers, date, data, corruptChunk);
      return rawRequest(env, 'POST', `/${B}?delete`, { ...s.headers, 'content-length': String(body.length) }, (r) => r.end(body));
    };
    for (const corrupt of [0, 1, 2]) {
      const r = await send(corrupt);
      assert.deepEqual([r.status, errorCode(r.body)], [403, 'SignatureDoesNotMatch'], `chunk ${corrupt}: ${r.body}`);
      assert.equal(await exists('signed-kept'), true, `chunk ${corrupt}`);
    }
    const ok = await send(-1);
    assert.equal(ok.status, 200, ok.body);
    assert.equal(await exists('signed-kept'), false);
  });

  it('a wrong Content-MD5, or a client that hangs up mid-body, deletes nothing; the daemon serves on', async () => {
    await put('md5-kept');
    const body = Buffer.from(`<Delete><Object><Key>md5-kept</Key></Object>${' '.repeat(100_000)}</Delete>`);
    const wrong = createHash('md5').update('something else').digest('base64');
    const r = await postDelete(env, B, body, { headers: { 'content-md5': wrong } });
    assert.deepEqual([r.status, errorCode(r.body)], [400, 'BadDigest'], r.body);
    assert.equal(await exists('md5-kept'), true);

    const cut = await postDelete(env, B, body, { cutAfterBytes: 50_000 });
    assert.equal(cut.status, -1);
    assert.equal(await exists('md5-kept'), true);
    const right = createHash('md5').update(body).digest('base64');
    const ok = await postDelete(env, B, body, { headers: { 'content-md5': right } });
    assert.equal(ok.status, 200, ok.body);
    assert.equal(await exists('md5-kept'), false);
  });
});
