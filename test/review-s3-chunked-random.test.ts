// Review of 8948b49 (aws-chunked decoder coalescing pieces under 4 KiB): bodies
// in random chunk sizes (1 B to 100 KiB, many around the 4 KiB threshold), cut
// into random socket reads (down to 1 B, so boundaries fall inside chunk
// headers, CRLFs and the coalesce buffer), decode to exactly their bytes, in
// every payload mode, signed chunks chained and trailers checked; re-framed,
// flipped or cut bodies are refused. In process (verifiedBody, many seeds) and
// through a real daemon (PutObject: GET bytes and ETag; refused bodies leave
// the previous version).
import assert from 'node:assert/strict';
import { crc32c } from '@node-rs/crc32';
import { createHash, createHmac } from 'node:crypto';
import { setImmediate as turn } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { verifiedBody, type ChunkSigning, type PayloadMode } from '../src/dataplane/s3/sigv4.js';
import { S3Error } from '../src/dataplane/s3/errors.js';
import { rawRequest, signer, startS3, type S3Env } from './helpers/s3-env.js';

const KiB = 1024;
/** REVIEW_SEED=n reruns one failing case; the seed is printed as a diagnostic. */
const BASE_SEED = Number(process.env.REVIEW_SEED ?? 0x5eed);

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const between = (rnd: () => number, lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));

function randomBytes(rnd: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}

/** Chunk sizes summing to `total`: tiny ones, ones at the 4 KiB coalesce threshold, large ones (up to 100 KiB). */
function chunkSizes(rnd: () => number, total: number): number[] {
  const sizes: number[] = [];
  for (let left = total; left > 0; ) {
    const r = rnd();
    const want = r < 0.4 ? between(rnd, 1, 64) : r < 0.6 ? between(rnd, 4094, 4098) : r < 0.75 ? between(rnd, 65, 8 * KiB) : between(rnd, 8 * KiB, 100 * KiB);
    const n = Math.min(left, want);
    sizes.push(n);
    left -= n;
  }
  return sizes;
}

const sha256hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const crc32cB64 = (b: Buffer) => {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(crc32c(b) >>> 0);
  return out.toString('base64');
};

type Mode = 'signed' | 'signed-trailer' | 'unsigned-trailer';

/**
 * The aws-chunked wire bytes of `data` cut at `sizes`, the final empty chunk,
 * and (trailer modes) an x-amz-checksum-crc32c trailer of `checksumOf`'s bytes
 * (signed with the chain in signed-trailer). Signatures are computed over
 * `signSizes`' chunks of `signData` (defaults: `sizes`, `data`), so a body
 * framed at other boundaries, or carrying other bytes, has signatures of other chunks.
 */
function chunkedWire(mode: Mode, data: Buffer, sizes: number[], signing: ChunkSigning | undefined, opts: { signSizes?: number[]; signData?: Buffer; checksumOf?: Buffer } = {}): Buffer {
  const signed = mode !== 'unsigned-trailer';
  const sigs: string[] = [];
  if (signed) {
    let prev = signing!.seedSignature;
    let off = 0;
    const signData = opts.signData ?? data;
    for (const n of [...(opts.signSizes ?? sizes), 0]) {
      const chunk = signData.subarray(off, off + n);
      off += n;
      const sts = `AWS4-HMAC-SHA256-PAYLOAD\n${signing!.amzDate}\n${signing!.scope}\n${prev}\n${sha256hex('')}\n${sha256hex(chunk)}`;
      prev = createHmac('sha256', signing!.signingKey).update(sts).digest('hex');
      sigs.push(prev);
    }
  }
  const parts: Buffer[] = [];
  let off = 0;
  for (const [i, n] of [...sizes, 0].entries()) {
    const ext = signed ? `;chunk-signature=${sigs[i] ?? '0'.repeat(64)}` : '';
    parts.push(Buffer.from(`${n.toString(16)}${ext}\r\n`));
    if (n > 0) {
      parts.push(data.subarray(off, off + n), Buffer.from('\r\n'));
      off += n;
    }
  }
  if (mode === 'signed') {
    parts.push(Buffer.from('\r\n'));
  } else {
    const line = `x-amz-checksum-crc32c:${crc32cB64(opts.checksumOf ?? data)}`;
    parts.push(Buffer.from(`${line}\r\n`));
    if (mode === 'signed-trailer') {
      const sts = `AWS4-HMAC-SHA256-TRAILER\n${signing!.amzDate}\n${signing!.scope}\n${sigs[sigs.length - 1]}\n${sha256hex(`${line}\n`)}`;
      parts.push(Buffer.from(`x-amz-trailer-signature:${createHmac('sha256', signing!.signingKey).update(sts).digest('hex')}\r\n`));
    }
    parts.push(Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** `wire` cut into random socket reads: 1-3 bytes (boundaries inside headers and CRLFs) up to 128 KiB. */
function socketReads(rnd: () => number, wire: Buffer): Buffer[] {
  const reads: Buffer[] = [];
  for (let off = 0; off < wire.length; ) {
    const r = rnd();
    const n = Math.min(wire.length - off, r < 0.3 ? between(rnd, 1, 3) : r < 0.6 ? between(rnd, 4, 5000) : between(rnd, 5001, 128 * KiB));
    // A copy, as a socket hands fresh buffers: the decoder may keep subarrays of what it is given.
    reads.push(Buffer.from(wire.subarray(off, off + n)));
    off += n;
  }
  return reads;
}

function signingKeyFor(secret: string, day: string): Buffer {
  let k = createHmac('sha256', `AWS4${secret}`).update(day).digest();
  for (const s of ['us-east-1', 's3', 'aws4_request']) k = createHmac('sha256', k).update(s).digest();
  return k;
}

const payloadOf = (mode: Mode, signing: ChunkSigning): PayloadMode => ({ kind: 'chunked', signing: mode === 'unsigned-trailer' ? undefined : signing, trailer: mode !== 'signed' });
const trailerHeaders = (mode: Mode): Record<string, string> => (mode === 'signed' ? {} : { 'x-amz-trailer': 'x-amz-checksum-crc32c' });

/** Decodes `reads` through verifiedBody, the source and the consumer each sometimes waiting a turn (a slow socket, a store write). */
async function decode(rnd: () => number, reads: Buffer[], payload: PayloadMode, headers: Record<string, string>): Promise<{ bytes: Buffer; pieces: number }> {
  const waits = reads.map(() => rnd() < 0.2);
  async function* source() {
    for (const [i, r] of reads.entries()) {
      if (waits[i]) await turn();
      yield r;
    }
  }
  const kept: Buffer[] = [];
  for await (const piece of verifiedBody(source(), payload, headers)) {
    // Kept, not copied (as the store's batches keep them): a reused buffer would show at the end.
    kept.push(piece);
    if (rnd() < 0.1) await turn();
  }
  return { bytes: Buffer.concat(kept), pieces: kept.length };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof S3Error, `not an S3Error: ${String(err)}`);
    return err.code;
  }
  return 'accepted';
}

describe('aws-chunked bodies in random chunk sizes (review of 8948b49)', () => {
  const signing: ChunkSigning = { signingKey: signingKeyFor('review-secret', '20261127'), amzDate: '20261127T190000Z', scope: '20261127/us-east-1/s3/aws4_request', seedSignature: 'a'.repeat(64) };

  it('verifiedBody decodes exactly, in every mode, whatever the chunk sizes and socket reads (60 seeds)', async (t) => {
    t.diagnostic(`seeds ${BASE_SEED}..${BASE_SEED + 59}`);
    for (let i = 0; i < 60; i++) {
      const seed = BASE_SEED + i;
      const rnd = prng(seed);
      const mode = (['signed', 'signed-trailer', 'unsigned-trailer'] as const)[i % 3];
      // Sizes around the 64 KiB coalesce buffer and the store's 1 MiB batches, and empty bodies.
      const total = i % 10 === 0 ? 0 : between(rnd, 1, rnd() < 0.3 ? 8 * KiB : 1200 * KiB);
      const data = randomBytes(rnd, total);
      const sizes = chunkSizes(rnd, total);
      const reads = socketReads(rnd, chunkedWire(mode, data, sizes, signing));
      const headers = { 'x-amz-decoded-content-length': String(total), ...trailerHeaders(mode) };
      const { bytes, pieces } = await decode(rnd, reads, payloadOf(mode, signing), headers);
      assert.ok(bytes.equals(data), `seed ${seed} (${mode}, ${total} B in ${sizes.length} chunks, ${reads.length} reads): decoded ${bytes.length} B differ`);
      // Never a piece per tiny chunk: a piece is a large chunk's bytes within one read, or the
      // coalesced small ones, handed on at a read's end, before a large piece, when 64 KiB are
      // held, or before a turn (every 1024 chunks).
      const large = sizes.filter((n) => n >= 4 * KiB).length;
      const bound = 2 * (reads.length + large) + total / (64 * KiB) + sizes.length / 1024 + 2;
      assert.ok(pieces <= bound, `seed ${seed}: ${pieces} pieces for ${reads.length} reads, ${sizes.length} chunks (${large} of 4 KiB or more)`);
    }
  });

  it('refuses a body whose bytes, framing or trailer do not match, whatever the reads (60 seeds)', async () => {
    for (let i = 0; i < 60; i++) {
      const seed = BASE_SEED + 1000 + i;
      const rnd = prng(seed);
      const mode = (['signed', 'signed-trailer', 'unsigned-trailer'] as const)[i % 3];
      const total = between(rnd, 2, 300 * KiB);
      const data = randomBytes(rnd, total);
      const sizes = chunkSizes(rnd, total);
      const headers = { 'x-amz-decoded-content-length': String(total), ...trailerHeaders(mode) };
      const payload = payloadOf(mode, signing);
      const kind = i % 4;
      let wire: Buffer;
      let expected: string[];
      if (kind === 0) {
        // One data byte flipped: the chunk's signature (signed modes) or the trailer checksum (unsigned) catches it.
        const flipped = Buffer.from(data);
        const at = between(rnd, 0, total - 1);
        flipped[at] = flipped[at]! ^ 0x01;
        wire = chunkedWire(mode, flipped, sizes, signing, { signData: data, checksumOf: data });
        expected = mode === 'unsigned-trailer' ? ['BadDigest'] : ['SignatureDoesNotMatch'];
      } else if (kind === 1) {
        // The same bytes, one chunk boundary moved by one byte, the signatures of the original chunks: only a chained signature over each chunk's exact bytes sees it.
        if (mode === 'unsigned-trailer' || sizes.length < 2) continue;
        const moved = [...sizes];
        const k = between(rnd, 0, moved.length - 2);
        if (moved[k]! > 1) {
          moved[k]!--;
          moved[k + 1]!++;
        } else {
          moved[k]!++;
          moved[k + 1]!--;
          if (moved[k + 1] === 0) continue;
        }
        wire = chunkedWire(mode, data, moved, signing, { signSizes: sizes });
        expected = ['SignatureDoesNotMatch'];
      } else if (kind === 2) {
        // Cut anywhere before the end of the final chunk: never accepted.
        const full = chunkedWire(mode, data, sizes, signing);
        wire = full.subarray(0, between(rnd, 0, full.length - (mode === 'signed' ? 3 : 40)));
        expected = ['IncompleteBody', 'InvalidRequest', 'SignatureDoesNotMatch'];
      } else {
        // A trailer checksum of other bytes (the last byte changed).
        if (mode === 'signed') continue;
        const other = Buffer.from(data);
        other[total - 1] = other[total - 1]! ^ 0x80;
        wire = chunkedWire(mode, data, sizes, signing, { checksumOf: other });
        expected = ['BadDigest'];
      }
      const code = await refusal(decode(rnd, socketReads(rnd, wire), payload, headers));
      assert.ok(expected.includes(code), `seed ${seed} (${mode}, kind ${kind}): ${code}, expected one of ${expected.join(', ')}`);
    }
  });

  describe('through the daemon', () => {
    let env: S3Env;
    const B = 'chunked-random';
    before(async () => {
      env = await startS3();
      await env.sdk.send(new CreateBucketCommand({ Bucket: B }));
    });
    after(async () => {
      await env.cleanup();
    });

    const getBytes = async (key: string) => Buffer.from(await (await env.sdk.send(new GetObjectCommand({ Bucket: B, Key: key }))).Body!.transformToByteArray());

    /** A PutObject of `data` in `mode`, chunked at random sizes, the wire written in random-size writes honouring backpressure. */
    async function put(rnd: () => number, key: string, mode: Mode, data: Buffer, mutate?: (wire: Buffer, seedSigning: ChunkSigning) => Buffer) {
      const u = new URL(env.endpoint);
      const date = new Date();
      const headers = { host: u.host, 'x-amz-content-sha256': mode === 'signed' ? 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD' : mode === 'signed-trailer' ? 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER' : 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': String(data.length), ...trailerHeaders(mode) };
      const s = (await signer(env).sign({ method: 'PUT', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${B}/${key}`, query: {}, headers } as never, { signingDate: date })) as unknown as { headers: Record<string, string> };
      const amzDate = s.headers['x-amz-date']!;
      const seed: ChunkSigning = { signingKey: signingKeyFor(env.secretAccessKey, amzDate.slice(0, 8)), amzDate, scope: `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`, seedSignature: /Signature=([0-9a-f]{64})/.exec(s.headers.authorization!)![1]! };
      let wire = chunkedWire(mode, data, chunkSizes(rnd, data.length), seed);
      if (mutate) wire = mutate(wire, seed);
      const writes = socketReads(rnd, wire);
      return rawRequest(env, 'PUT', `/${B}/${key}`, { ...s.headers, 'content-length': String(wire.length) }, (r) => {
        const more = () => {
          while (writes.length > 1) if (!r.write(writes.shift())) return void r.once('drain', more);
          r.end(writes.shift());
        };
        more();
      });
    }

    it('PutObject in random chunk sizes, every mode: GET returns exactly the bytes, the ETag is their MD5', async (t) => {
      const rnd = prng(BASE_SEED + 2000);
      t.diagnostic(`seed ${BASE_SEED + 2000}`);
      const modes: Mode[] = ['signed', 'signed-trailer', 'unsigned-trailer'];
      for (let i = 0; i < 9; i++) {
        const mode = modes[i % 3]!;
        // Small (inline, up to 16 KiB), across the 64 KiB coalesce buffer, and past 1 MiB (two store chunks).
        const total = [between(rnd, 1, 16 * KiB), between(rnd, 60 * KiB, 600 * KiB), between(rnd, 1100 * KiB, 1600 * KiB)][Math.floor(i / 3)]!;
        const data = randomBytes(rnd, total);
        const key = `obj-${i}-${mode}`;
        const r = await put(rnd, key, mode, data);
        assert.equal(r.status, 200, `${key}: ${r.body}`);
        assert.ok((await getBytes(key)).equals(data), `${key}: GET bytes differ`);
        const head = await env.sdk.send(new HeadObjectCommand({ Bucket: B, Key: key }));
        assert.equal(head.ETag, `"${createHash('md5').update(data).digest('hex')}"`, key);
        assert.equal(head.ContentLength, total, key);
      }
    });

    it('a refused body (a flipped byte under a chunk signature, a wrong trailer checksum) leaves the previous version whole', async () => {
      const rnd = prng(BASE_SEED + 3000);
      const key = 'kept';
      const first = randomBytes(rnd, 300 * KiB);
      assert.equal((await put(rnd, key, 'unsigned-trailer', first)).status, 200);
      const second = randomBytes(rnd, 700 * KiB);
      // Signed: one byte flipped well into the body, after many chunks were accepted and handed to the store.
      const flipped = await put(rnd, key, 'signed', second, (wire) => {
        const at = wire.indexOf(second.subarray(500 * KiB, 500 * KiB + 32));
        assert.ok(at > 0);
        const w = Buffer.from(wire);
        w[at + 5] = w[at + 5]! ^ 0x01;
        return w;
      });
      assert.equal(flipped.status, 403, flipped.body);
      assert.match(flipped.body, /SignatureDoesNotMatch/);
      // Unsigned with a trailer checksum that is not the body's.
      const badSum = await put(rnd, key, 'unsigned-trailer', second, (wire) => {
        const line = Buffer.from(`x-amz-checksum-crc32c:${crc32cB64(second)}`);
        const at = wire.lastIndexOf(line);
        assert.ok(at > 0);
        return Buffer.concat([wire.subarray(0, at), Buffer.from(`x-amz-checksum-crc32c:${crc32cB64(first)}`), wire.subarray(at + line.length)]);
      });
      assert.equal(badSum.status, 400, badSum.body);
      assert.match(badSum.body, /BadDigest/);
      assert.ok((await getBytes(key)).equals(first), 'the previous version is what GET returns');
      const head = await env.sdk.send(new HeadObjectCommand({ Bucket: B, Key: key }));
      assert.equal(head.ETag, `"${createHash('md5').update(first).digest('hex')}"`);
    });
  });
});
