// Review of 5a768fc (S3 subresource routing), real daemon, hand-signed requests:
// a query the daemon does not act on (a subresource name in another case, a
// typo, ?uploads on an object, a versionId other than the one "null" version
// ListObjectVersions advertises) must never overwrite, delete or create data;
// bodies of PUT ?tagging are verified (payload hash, aws-chunked signatures,
// size bound) before anything is stored; the SDK's ?x-id= still works.
// The routing cases fail before the fix that follows this test's commit (65d0e25);
// DELETE /bucket?uploadId= / ?versionId= / ?partNumber= still deleted the bucket after it (fixed next).
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { errorCode, signer, startS3, type S3Env } from './helpers/s3-env.js';

interface Answer {
  status: number;
  body: string;
}

/** One signed request on a connection of its own; `query` keeps order and case as given. */
async function raw(env: S3Env, method: string, pathname: string, query: [string, string][], body: string | Buffer = '', headers: Record<string, string> = {}): Promise<Answer> {
  const u = new URL(env.endpoint);
  const q: Record<string, string> = Object.fromEntries(query);
  const bodyBytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const req = { method, protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: pathname, query: q, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': String(bodyBytes.length), ...(q.delete !== undefined ? { 'content-md5': createHash('md5').update(bodyBytes).digest('base64') } : {}), ...headers } };
  const s = (await signer(env).sign(req as never)) as unknown as { headers: Record<string, string> };
  const qs = query.map(([k, v]) => (v === '' ? encodeURIComponent(k) : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)).join('&');
  return send(u, method, `${pathname}${qs ? `?${qs}` : ''}`, s.headers, bodyBytes);
}

function send(u: URL, method: string, target: string, headers: Record<string, string>, body: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: u.hostname, port: u.port, method, path: target, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8') }));
    });
    // The server may answer and close before it read a refused body.
    r.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? resolve({ status: -1, body: err.code }) : reject(err)));
    r.end(body);
  });
}

const tagsXml = (tags: [string, string][]) => `<Tagging><TagSet>${tags.map(([k, v]) => `<Tag><Key>${k}</Key><Value>${v}</Value></Tag>`).join('')}</TagSet></Tagging>`;

describe('review: S3 subresource routing never writes or deletes on a query it does not act on', () => {
  let env: S3Env;
  const B = 'routing';
  const EMPTY = 'routing-empty';
  const ORIGINAL = 'original bytes';

  before(async () => {
    env = await startS3();
    for (const b of [B, EMPTY]) assert.equal((await raw(env, 'PUT', `/${b}`, [])).status, 200);
  });
  after(async () => {
    await env.cleanup();
  });

  const putOriginal = async (key: string) => assert.equal((await raw(env, 'PUT', `/${B}/${key}`, [], ORIGINAL)).status, 200);
  const bodyOf = async (key: string) => {
    const r = await raw(env, 'GET', `/${B}/${key}`, []);
    return r.status === 200 ? r.body : `status ${r.status} ${errorCode(r.body) ?? ''}`;
  };
  const tagsOf = async (key: string) => {
    const r = await raw(env, 'GET', `/${B}/${key}`, [['tagging', '']]);
    assert.equal(r.status, 200, r.body);
    return [...r.body.matchAll(/<Tag><Key>([^<]*)<\/Key><Value>([^<]*)<\/Value><\/Tag>/g)].map((m) => [m[1]!, m[2]!]);
  };

  it('object: PUT/DELETE with ?uploads, a mis-cased or misspelt subresource, or another versionId leave the object as it was', async () => {
    await putOriginal('k');
    const attempts: [string, [string, string][], string][] = [
      ['DELETE', [['uploads', '']], ''],
      ['PUT', [['uploads', '']], 'overwritten by PUT ?uploads'],
      ['PUT', [['Tagging', '']], tagsXml([['a', '1']])],
      ['PUT', [['TAGGING', '']], tagsXml([['a', '1']])],
      ['PUT', [['taging', '']], tagsXml([['a', '1']])],
      ['DELETE', [['Tagging', '']], ''],
      ['DELETE', [['ACL', '']], ''],
      ['DELETE', [['versionId', '3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY']], ''],
      ['PUT', [['versionId', '3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY']], 'overwritten by PUT ?versionId'],
      // POST with a subresource that has no POST (405), and a subresource given a value.
      ['POST', [['tagging', '']], tagsXml([['a', '1']])],
      ['POST', [['acl', '']], ''],
      ['POST', [['uploads', ''], ['tagging', '']], ''],
      ['PUT', [['versioning', '']], '<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>'],
      ['DELETE', [['location', '']], ''],
      ['PUT', [['tagging', 'x']], '<Tagging><TagSet><Tag><Key>v</Key><Value>1</Value></Tag></TagSet></Tagging>'],
    ];
    // Every attempt is made (the object put back after one that changed it), then all failures reported.
    const failures: string[] = [];
    for (const [method, query, body] of attempts) {
      const r = await raw(env, method, `/${B}/k`, query, body);
      const what = `${method} ?${query.map(([k, v]) => (v ? `${k}=${v}` : k)).join('&')}`;
      const now = await bodyOf('k');
      if (now !== ORIGINAL) {
        failures.push(`${what}: ${r.status}, object now ${JSON.stringify(now)}`);
        await putOriginal('k');
      } else if (!(r.status >= 400 && r.status < 500) && !(what === 'PUT ?tagging=x' && r.status === 200)) failures.push(`${what}: ${r.status} ${errorCode(r.body) ?? ''}`);
    }
    assert.deepEqual(failures, []);
    // ?tagging with a value is still PutObjectTagging (S3 ignores the value): the tags, not the bytes, changed.
    assert.deepEqual(await tagsOf('k'), [['v', '1']]);
    // A GET naming another version is not answered with the current one.
    const g = await raw(env, 'GET', `/${B}/k`, [['versionId', '3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY']]);
    assert.ok(g.status >= 400 && g.status < 500, `GET ?versionId=<other>: ${g.status}`);
    // A copy from another version of the source is refused, not served from the current one.
    const c = await raw(env, 'PUT', `/${B}/copy`, [], '', { 'x-amz-copy-source': `/${B}/k?versionId=3HL4kqtJlcpXroDTDmJ` });
    assert.ok(c.status >= 400 && c.status < 500, `copy of another version: ${c.status} ${c.body}`);
    assert.match(await bodyOf('copy'), /status 404/);
    assert.equal(await bodyOf('k'), ORIGINAL);
    // DeleteObjects naming another version of the key: an Error entry for it, the object kept.
    const other = await raw(env, 'POST', `/${B}`, [['delete', '']], `<Delete><Object><Key>k</Key><VersionId>3HL4kqtJlcpXroDTDmJ</VersionId></Object></Delete>`);
    assert.equal(other.status, 200, other.body);
    assert.match(other.body, /<Error><Key>k<\/Key><VersionId>3HL4kqtJlcpXroDTDmJ<\/VersionId><Code>InvalidArgument<\/Code>/);
    assert.doesNotMatch(other.body, /<Deleted>/);
    assert.equal(await bodyOf('k'), ORIGINAL, 'DeleteObjects with another VersionId deleted the object');
    // The null version is the object.
    const nullVersion = await raw(env, 'POST', `/${B}`, [['delete', '']], `<Delete><Object><Key>k</Key><VersionId>null</VersionId></Object></Delete>`);
    assert.match(nullVersion.body, /<Deleted><Key>k<\/Key><VersionId>null<\/VersionId><\/Deleted>/);
    assert.match(await bodyOf('k'), /status 404/);
  });

  it('bucket: DELETE/PUT with a mis-cased or misspelt subresource neither deletes an empty bucket nor creates one', async () => {
    const failures: string[] = [];
    // The last three: object parameters on a bucket (a client that lost the key of an AbortMultipartUpload or a DeleteObject).
    for (const [name, value] of [['Tagging', ''], ['Policy', ''], ['uploadz', ''], ['lifecycle2', ''], ['uploadId', 'abc'], ['versionId', 'null'], ['partNumber', '1']]) {
      const r = await raw(env, 'DELETE', `/${EMPTY}`, [[name!, value!]]);
      if ((await raw(env, 'HEAD', `/${EMPTY}`, [])).status !== 200) {
        failures.push(`DELETE ?${name}: ${r.status}, bucket deleted`);
        assert.equal((await raw(env, 'PUT', `/${EMPTY}`, [])).status, 200);
      } else if (!(r.status >= 400 && r.status < 500)) failures.push(`DELETE ?${name}: ${r.status}`);
    }
    const v = await raw(env, 'PUT', '/routing-new', [['Versioning', '']], '<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>');
    if ((await raw(env, 'HEAD', '/routing-new', [])).status !== 404) failures.push(`PUT ?Versioning: ${v.status}, bucket created`);
    else if (!(v.status >= 400 && v.status < 500)) failures.push(`PUT ?Versioning: ${v.status}`);
    // PutBucketAcl by canned header (no body), the name in another case.
    const a = await raw(env, 'PUT', '/routing-new2', [['Acl', '']], '', { 'x-amz-acl': 'private' });
    if ((await raw(env, 'HEAD', '/routing-new2', [])).status !== 404) failures.push(`PUT ?Acl: ${a.status}, bucket created`);
    else if (!(a.status >= 400 && a.status < 500)) failures.push(`PUT ?Acl: ${a.status}`);
    assert.deepEqual(failures, []);
  });

  it('what clients send still works: ?x-id (aws-sdk-js v3), versionId=null, SDK PutObject/GetObject/DeleteObject', async () => {
    assert.equal((await raw(env, 'PUT', `/${B}/xid`, [['x-id', 'PutObject']], 'by x-id')).status, 200);
    assert.equal(await bodyOf('xid'), 'by x-id');
    assert.equal((await raw(env, 'GET', `/${B}/xid`, [['versionId', 'null']])).body, 'by x-id');
    assert.equal((await raw(env, 'DELETE', `/${B}/xid`, [['versionId', 'null']])).status, 204);
    assert.match(await bodyOf('xid'), /status 404/);
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'sdk', Body: 'sdk bytes' }));
    assert.equal(await (await env.sdk.send(new GetObjectCommand({ Bucket: B, Key: 'sdk' }))).Body!.transformToString(), 'sdk bytes');
    await env.sdk.send(new DeleteObjectCommand({ Bucket: B, Key: 'sdk' }));
    assert.match(await bodyOf('sdk'), /status 404/);
  });

  it('PUT ?tagging bodies are verified before anything is stored: payload hash, aws-chunked signatures, size, XML', async () => {
    await putOriginal('t');
    assert.equal((await raw(env, 'PUT', `/${B}/t`, [['tagging', '']], tagsXml([['keep', '1']]))).status, 200);
    const good = tagsXml([['changed', '1']]);
    // Signed x-amz-content-sha256 of another body.
    const mismatch = await raw(env, 'PUT', `/${B}/t`, [['tagging', '']], good, { 'x-amz-content-sha256': createHash('sha256').update('other').digest('hex') });
    assert.equal(mismatch.status, 400);
    assert.equal(errorCode(mismatch.body), 'XAmzContentSHA256Mismatch');
    // The right hash, but signed with another secret.
    const u = new URL(env.endpoint);
    const forged = (await signer(env, 'not-the-secret').sign({ method: 'PUT', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${B}/t`, query: { tagging: '' }, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'content-length': String(good.length) } } as never)) as unknown as { headers: Record<string, string> };
    const f = await send(u, 'PUT', `/${B}/t?tagging`, forged.headers, Buffer.from(good));
    assert.equal(f.status, 403);
    assert.equal(errorCode(f.body), 'SignatureDoesNotMatch');
    // aws-chunked: a good stream is taken; one chunk signature off is refused.
    assert.equal((await chunkedPut(env, `/${B}/t`, Buffer.from(tagsXml([['chunked', 'yes']])), false)).status, 200);
    assert.deepEqual(await tagsOf('t'), [['chunked', 'yes']]);
    const badChunk = await chunkedPut(env, `/${B}/t`, Buffer.from(good), true);
    assert.equal(badChunk.status, 403, badChunk.body);
    assert.equal(errorCode(badChunk.body), 'SignatureDoesNotMatch');
    // 10 MiB body: refused on the bound, the daemon still answers.
    const huge = Buffer.concat([Buffer.from('<Tagging><TagSet>'), Buffer.alloc(10 * 1024 * 1024, ' '), Buffer.from('</TagSet></Tagging>')]);
    const h = await raw(env, 'PUT', `/${B}/t`, [['tagging', '']], huge);
    assert.ok(h.status === -1 || (h.status === 400 && errorCode(h.body) === 'MaxMessageLengthExceeded'), `10 MiB: ${h.status} ${h.body.slice(0, 200)}`);
    // The largest tag set S3 allows (50 bucket tags, keys of 128 and values of 256 four-byte
    // characters, about 77 KB) is taken; a 300 KiB body is refused unparsed: the parser runs on
    // the daemon's event loop (four 4 MiB bodies of empty <Tag/> stalled other clients' GETs
    // 1.0-1.8 s before the subresource bodies got their own bound).
    // Deseret letters: \p{L}, four bytes each in UTF-8; the first one makes each key unique.
    const letters = (n: number, i: number) => String.fromCodePoint(0x10400 + i) + String.fromCodePoint(0x10428).repeat(n - 1);
    const biggest = tagsXml(Array.from({ length: 50 }, (_, i): [string, string] => [letters(128, i), letters(256, i)]));
    assert.ok(Buffer.byteLength(biggest) > 70_000);
    const okBig = await raw(env, 'PUT', `/${B}`, [['tagging', '']], biggest);
    assert.equal(okBig.status, 204, okBig.body);
    const padded = Buffer.from(tagsXml([['padded', '1']]).replace('<TagSet>', `<TagSet>${' '.repeat(300 * 1024)}`));
    const p = await raw(env, 'PUT', `/${B}/t`, [['tagging', '']], padded);
    assert.ok(p.status === -1 || (p.status === 400 && errorCode(p.body) === 'MaxMessageLengthExceeded'), `300 KiB: ${p.status} ${p.body.slice(0, 200)}`);
    const aclPadded = `<AccessControlPolicy>${' '.repeat(300 * 1024)}</AccessControlPolicy>`;
    const pa = await raw(env, 'PUT', `/${B}/t`, [['acl', '']], aclPadded);
    assert.ok(pa.status === -1 || (pa.status === 400 && errorCode(pa.body) === 'MaxMessageLengthExceeded'), `300 KiB ACL: ${pa.status} ${pa.body.slice(0, 200)}`);
    // An entity declaration, an unknown entity, invalid UTF-8: refused with a code, nothing stored.
    const doctype = await raw(env, 'PUT', `/${B}/t`, [['tagging', '']], `<!DOCTYPE x [<!ENTITY e "v">]>${tagsXml([['a', '&e;']])}`);
    assert.equal(errorCode(doctype.body), 'MalformedXML');
    assert.equal(errorCode((await raw(env, 'PUT', `/${B}/t`, [['tagging', '']], tagsXml([['a', '&e;']]))).body), 'MalformedXML');
    const invalidUtf8 = Buffer.concat([Buffer.from('<Tagging><TagSet><Tag><Key>k</Key><Value>'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('</Value></Tag></TagSet></Tagging>')]);
    assert.equal(errorCode((await raw(env, 'PUT', `/${B}/t`, [['tagging', '']], invalidUtf8)).body), 'InvalidTag');
    assert.deepEqual(await tagsOf('t'), [['chunked', 'yes']]);
    assert.equal(await bodyOf('t'), ORIGINAL);
  });
});

/** PUT ?tagging with an aws-chunked (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) body in 2 chunks; `corrupt`: the first chunk's signature is off. */
async function chunkedPut(env: S3Env, pathname: string, payload: Buffer, corrupt: boolean): Promise<Answer> {
  const u = new URL(env.endpoint);
  const chunks = [payload.subarray(0, 20), payload.subarray(20), Buffer.alloc(0)];
  const sigLen = 64;
  const encodedLength = chunks.reduce((n, c) => n + c.length.toString(16).length + ';chunk-signature='.length + sigLen + 4 + c.length, 0);
  const headers = {
    host: u.host,
    'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
    'content-encoding': 'aws-chunked',
    'x-amz-decoded-content-length': String(payload.length),
    'content-length': String(encodedLength),
  };
  const s = (await signer(env).sign({ method: 'PUT', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: pathname, query: { tagging: '' }, headers } as never)) as unknown as { headers: Record<string, string> };
  const amzDate = s.headers['x-amz-date']!;
  const date = amzDate.slice(0, 8);
  const scope = `${date}/us-east-1/s3/aws4_request`;
  let prev = /Signature=([0-9a-f]{64})/.exec(s.headers.authorization!)![1]!;
  const hmac = (k: Buffer | string, d: string) => createHmac('sha256', k).update(d).digest();
  const key = hmac(hmac(hmac(hmac(`AWS4${env.secretAccessKey}`, date), 'us-east-1'), 's3'), 'aws4_request');
  const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
  const parts: Buffer[] = [];
  chunks.forEach((c, i) => {
    let sig = createHmac('sha256', key).update(['AWS4-HMAC-SHA256-PAYLOAD', amzDate, scope, prev, sha(''), sha(c)].join('\n')).digest('hex');
    prev = sig;
    if (corrupt && i === 0) sig = `${sig.slice(0, -1)}${sig.endsWith('0') ? '1' : '0'}`;
    parts.push(Buffer.from(`${c.length.toString(16)};chunk-signature=${sig}\r\n`), c, Buffer.from('\r\n'));
  });
  const body = Buffer.concat(parts);
  assert.equal(body.length, encodedLength);
  return send(u, 'PUT', `${pathname}?tagging`, s.headers, body);
}
