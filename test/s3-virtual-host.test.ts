// Virtual-host-style addressing (`<bucket>.<domain>`, the AWS SDK's default
// when not told otherwise) with `s3.domains` configured, driven by
// @aws-sdk/client-s3 without forcePathStyle; path style keeps working beside it.
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dns from 'node:dns';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TestDaemon } from './helpers/daemon.js';
import { sdkClient } from './helpers/s3-env.js';

const DOMAIN = 's3.couchestor.test';

describe('s3 virtual-host-style addressing', () => {
  let d: TestDaemon;
  let vhost: S3Client;
  let pathStyle: S3Client;
  const hostsSeen: string[] = [];
  before(async () => {
    d = await TestDaemon.start({ config: `s3:\n  domains: [${DOMAIN}]\n` });
    const { accessKeyId, secretAccessKey } = (JSON.parse(fs.readFileSync(path.join(d.dataDir, 's3-credentials.json'), 'utf8')) as { keys: { accessKeyId: string; secretAccessKey: string }[] }).keys[0]!;
    const port = new URL(d.s3Endpoint).port;
    // No DNS for the test domain here: every name under it resolves to the daemon.
    const lookup = ((host: string, opts: dns.LookupOptions, cb: (...a: unknown[]) => void) => {
      hostsSeen.push(host);
      if (host === DOMAIN || host.endsWith(`.${DOMAIN}`)) {
        if (opts.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
        else cb(null, '127.0.0.1', 4);
      } else dns.lookup(host, opts, cb as never);
    }) as unknown as http.AgentOptions['lookup'];
    vhost = new S3Client({
      endpoint: `http://${DOMAIN}:${port}`,
      region: 'us-east-1',
      credentials: { accessKeyId, secretAccessKey },
      maxAttempts: 1,
      requestHandler: { httpAgent: new http.Agent({ lookup }) },
    });
    pathStyle = sdkClient(d.s3Endpoint, accessKeyId, secretAccessKey);
  });
  after(async () => {
    vhost.destroy();
    pathStyle.destroy();
    await d.cleanup();
  });

  it('create, put, list and get through <bucket>.<domain>; the same objects by path style', async () => {
    await vhost.send(new CreateBucketCommand({ Bucket: 'vh-bucket' }));
    const body = randomBytes(100_000);
    await vhost.send(new PutObjectCommand({ Bucket: 'vh-bucket', Key: 'dir/obj one', Body: body }));
    assert.ok(hostsSeen.includes(`vh-bucket.${DOMAIN}`), `the SDK addressed the bucket by host name (saw ${hostsSeen.join(', ')})`);
    const listed = await vhost.send(new ListObjectsV2Command({ Bucket: 'vh-bucket' }));
    assert.deepEqual(listed.Contents?.map((c) => [c.Key, c.Size]), [['dir/obj one', body.length]]);
    const got = await vhost.send(new GetObjectCommand({ Bucket: 'vh-bucket', Key: 'dir/obj one' }));
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(body));
    const byPath = await pathStyle.send(new GetObjectCommand({ Bucket: 'vh-bucket', Key: 'dir/obj one' }));
    assert.ok(Buffer.from(await byPath.Body!.transformToByteArray()).equals(body));
    await pathStyle.send(new PutObjectCommand({ Bucket: 'vh-bucket', Key: 'by-path', Body: 'p' }));
    const again = await vhost.send(new GetObjectCommand({ Bucket: 'vh-bucket', Key: 'by-path' }));
    assert.equal(await again.Body!.transformToString(), 'p');
  });

  it('a bucket named by the host that does not exist is NoSuchBucket, with a valid signature', async () => {
    await assert.rejects(vhost.send(new GetObjectCommand({ Bucket: 'no-such-vh', Key: 'k' })), (e: Error) => e.name === 'NoSuchBucket');
  });

  it('a bad s3.domains entry is refused at start with a clear error', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 's3-vhost-bad-'));
    try {
      await assert.rejects(TestDaemon.start({ dataDir, config: 's3:\n  domains: ["S3.Example:9000"]\n' }), /s3\.domains must be a list of lowercase DNS names/);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
