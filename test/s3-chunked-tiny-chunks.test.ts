// aws-chunked bodies in one-byte chunks (sigv4.ts decodeChunked): decoded
// exactly, handed on in coalesced pieces rather than one Buffer per byte, and
// decoded with turns of the event loop. In process (verifiedBody, the
// longest synchronous run measured in CPU time) and through a real daemon
// (PutObject and UploadPart, signed and unsigned chunks, heap from /metrics).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { CompleteMultipartUploadCommand, CreateBucketCommand, CreateMultipartUploadCommand, GetObjectCommand } from '@aws-sdk/client-s3';
import { verifiedBody } from '../src/dataplane/s3/sigv4.js';
import { rawRequest, scrapeMetrics, signedChunkedBody, signer, startS3, type S3Env } from './helpers/s3-env.js';

const MiB = 1024 * 1024;
const pattern = (n: number) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
};
/** `data` as unsigned aws-chunked wire bytes, one byte a chunk (`1\r\nX\r\n`), cut into 64 KiB-of-data socket reads. */
function oneByteWire(data: Buffer): Buffer[] {
  const reads: Buffer[] = [];
  for (let off = 0; off < data.length; off += 65536) {
    const n = Math.min(65536, data.length - off);
    const w = Buffer.allocUnsafe(n * 6);
    for (let i = 0; i < n; i++) {
      w[i * 6] = 0x31;
      w[i * 6 + 1] = 0x0d;
      w[i * 6 + 2] = 0x0a;
      w[i * 6 + 3] = data[off + i]!;
      w[i * 6 + 4] = 0x0d;
      w[i * 6 + 5] = 0x0a;
    }
    reads.push(w);
  }
  reads.push(Buffer.from('0\r\n\r\n'));
  return reads;
}

describe('aws-chunked bodies in one-byte chunks', () => {
  it('verifiedBody decodes 4 MiB of one-byte chunks exactly, in coalesced pieces, never running more than 50 ms of CPU between event-loop turns', async () => {
    const data = pattern(4 * MiB);
    const reads = oneByteWire(data);
    // Every read already buffered (a socket with all of it queued): nothing here waits, so only the decoder's own turns let the loop run.
    async function* source() {
      yield* reads;
    }
    // A setImmediate probe runs once per loop turn; the CPU time between two runs is the longest
    // synchronous stretch, which other processes on the machine do not inflate (wall-clock delay they do).
    let lastCpu = process.cpuUsage();
    let longestRunCpuMs = 0;
    let probing = true;
    const probe = () => {
      const c = process.cpuUsage();
      longestRunCpuMs = Math.max(longestRunCpuMs, (c.user - lastCpu.user + c.system - lastCpu.system) / 1000);
      lastCpu = c;
      if (probing) setImmediate(probe);
    };
    setImmediate(probe);
    const pieces: Buffer[] = [];
    for await (const p of verifiedBody(source(), { kind: 'chunked', trailer: true }, { 'x-amz-decoded-content-length': String(data.length) })) pieces.push(p);
    probing = false;
    assert.ok(Buffer.concat(pieces).equals(data), 'decoded exactly');
    // One piece per socket read at most (plus a flush per turn), never one per byte: the store keeps every piece until its 1 MiB write.
    assert.ok(pieces.length <= 2 * reads.length + 4096, `${pieces.length} pieces for ${reads.length} reads`);
    // Before: one run of ~2.4 s (the whole body between two turns); after: 6-9 ms (load 7 on 2 cores).
    assert.ok(longestRunCpuMs < 50, `longest run between event-loop turns: ${longestRunCpuMs.toFixed(1)} ms of CPU`);
  });

  describe('through the daemon', () => {
    let env: S3Env;
    const B = 'tiny-chunks';
    before(async () => {
      env = await startS3();
      await env.sdk.send(new CreateBucketCommand({ Bucket: B }));
    });
    after(async () => {
      await env.cleanup();
    });

    const getBytes = async (key: string) => Buffer.from(await (await env.sdk.send(new GetObjectCommand({ Bucket: B, Key: key }))).Body!.transformToByteArray());

    /** An unsigned one-byte-chunk PUT to `pathWithQuery` (STREAMING-UNSIGNED-PAYLOAD-TRAILER, Transfer-Encoding chunked), with the daemon's heap peak while it runs. */
    async function putOneByteChunks(pathname: string, query: Record<string, string>, data: Buffer): Promise<{ status: number; body: string; heapGrowthMiB: number }> {
      const u = new URL(env.endpoint);
      const headers = { host: u.host, 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': String(data.length), 'content-md5': createHash('md5').update(data).digest('base64') };
      const s = (await signer(env).sign({ method: 'PUT', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: pathname, query, headers } as never)) as unknown as { headers: Record<string, string> };
      const heapUsed = async () => Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(await scrapeMetrics(env))![1]);
      const baseline = await heapUsed();
      let peak = baseline;
      let sending = true;
      const sampler = (async () => {
        while (sending) {
          peak = Math.max(peak, await heapUsed());
          // Sampling pace, not a synchronisation.
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      const qs = new URLSearchParams(query).toString();
      const answer = await rawRequest(env, 'PUT', qs ? `${pathname}?${qs}` : pathname, { ...s.headers, 'transfer-encoding': 'chunked' }, (r) => {
        const writes = oneByteWire(data);
        const more = () => {
          while (writes.length > 1) if (!r.write(writes.shift())) return void r.once('drain', more);
          r.end(writes.shift());
        };
        more();
      });
      sending = false;
      await sampler;
      return { ...answer, heapGrowthMiB: (peak - baseline) / MiB };
    }

    it('PutObject of 4 MiB in one-byte chunks is stored exactly, the daemon heap growing a few MiB (was ~460 MiB)', async (t) => {
      const data = pattern(4 * MiB);
      const r = await putOneByteChunks(`/${B}/put`, {}, data);
      t.diagnostic(`daemon heap growth ${r.heapGrowthMiB.toFixed(1)} MiB`);
      assert.equal(r.status, 200, r.body);
      assert.ok((await getBytes('put')).equals(data));
      assert.ok(r.heapGrowthMiB < 64, `the daemon's heap grew ${r.heapGrowthMiB.toFixed(0)} MiB for a 4 MiB body`);
    });

    it('UploadPart in one-byte chunks (unsigned, then signed STREAMING-AWS4-HMAC-SHA256-PAYLOAD) completes to the exact object', async () => {
      const part1 = pattern(5 * MiB);
      const part2 = Buffer.from(pattern(20_000).map((b) => b ^ 0x5a));
      const up = await env.sdk.send(new CreateMultipartUploadCommand({ Bucket: B, Key: 'parts' }));
      const r1 = await putOneByteChunks(`/${B}/parts`, { partNumber: '1', uploadId: up.UploadId! }, part1);
      assert.equal(r1.status, 200, r1.body);
      // Signed: each one-byte chunk carries its chained signature.
      const u = new URL(env.endpoint);
      const date = new Date();
      const query = { partNumber: '2', uploadId: up.UploadId! };
      const headers = { host: u.host, 'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD', 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': String(part2.length) };
      const s = (await signer(env).sign({ method: 'PUT', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${B}/parts`, query, headers } as never, { signingDate: date })) as unknown as { headers: Record<string, string> };
      const chunks = Array.from({ length: part2.length }, (_, i) => part2.subarray(i, i + 1));
      const wire = await signedChunkedBody(env, s.headers, date, chunks);
      const r2 = await rawRequest(env, 'PUT', `/${B}/parts?${new URLSearchParams(query)}`, { ...s.headers, 'content-length': String(wire.length) }, (q) => q.end(wire));
      assert.equal(r2.status, 200, r2.body);
      const etag = (part: Buffer) => `"${createHash('md5').update(part).digest('hex')}"`;
      await env.sdk.send(new CompleteMultipartUploadCommand({ Bucket: B, Key: 'parts', UploadId: up.UploadId!, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: etag(part1) }, { PartNumber: 2, ETag: etag(part2) }] } }));
      assert.ok((await getBytes('parts')).equals(Buffer.concat([part1, part2])));
    });
  });
});
