// Review of 262e0fc/0ca3fe9 (ResponseSink send idle timeout): a client reading
// a large GET slowly but steadily (6.4 KiB every 25 ms, never a pause near the
// timeout) is not cut. The kernel takes bytes from libuv's write queue only
// when a third of the socket's send buffer (autotuned to 4 MiB here) is free,
// so the queue alone stayed unchanged ~5 s at this rate and the daemon cut the
// reader after ~4 MiB with a 2 s timeout (at the 60 s default: readers under
// ~23 KiB/s, e.g. a bandwidth-limited client on a fast network). And a
// response cut for a stalled client lets go of what it held: the deleted
// object's data file (pinned by the read) is freed, no descriptor stays open.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { scrapeMetrics, signer, startS3, type S3Env } from './helpers/s3-env.js';

const SEND_IDLE_MS = 2000;
const OBJECT_BYTES = 24 * 1024 * 1024;
const RATE_BYTES_PER_S = 256 * 1024;
const TICK_MS = 25;
/** Reading this long at the rate: the cut came after 5-10 s before the fix. */
const RUN_MS = 15_000;

const responseTimeouts = (metrics: string) => Number(/^couchestor_s3_idle_timeouts_total\{direction="response"\} (\S+)$/m.exec(metrics)?.[1] ?? NaN);

describe('S3 send idle timeout: a steady slow reader', () => {
  let env: S3Env;
  const B = 'steady';
  const data = randomBytes(OBJECT_BYTES);
  /** Past loopback's socket buffers (~10 MiB) and a 4 MiB read block: a stalled reader leaves a write the daemon cannot finish. */
  const pinnedData = randomBytes(48 * 1024 * 1024);
  before(async () => {
    env = await startS3({ config: `s3: {sendIdleTimeoutMs: ${SEND_IDLE_MS}}\n` });
    await env.sdk.send(new CreateBucketCommand({ Bucket: B }));
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'big', Body: data }));
  });

  const objFiles = () => {
    const root = path.join(env.daemon.dataDir, 'pools', 'hot-0', 'objects');
    const out: string[] = [];
    for (const sub of fs.existsSync(root) ? fs.readdirSync(root) : []) for (const f of fs.readdirSync(path.join(root, sub))) out.push(path.join(root, sub, f));
    return out;
  };
  /** The daemon's open descriptors on `file` (a deleted file shows with " (deleted)"). */
  const openOn = (file: string) => {
    const dir = `/proc/${env.daemon.proc.pid}/fd`;
    return fs.readdirSync(dir).filter((fd) => {
      try {
        return fs.readlinkSync(path.join(dir, fd)).startsWith(file);
      } catch {
        return false;
      }
    }).length;
  };

  it('a stalled reader is cut; its response releases the pinned version (the deleted object\'s file is freed) and its descriptor', async () => {
    const filesBefore = new Set(objFiles());
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'pinned', Body: pinnedData }));
    const file = objFiles().find((f) => !filesBefore.has(f))!;
    assert.ok(file, 'the object has a data file');
    const cutLine = /WARN s3: client stopped reading a response: connection closed bucket=steady key=pinned/;
    const cut = new Promise<void>((resolve, reject) => {
      const stream = env.daemon.proc.stderr!;
      const bound = setTimeout(() => reject(new Error('no cut logged within 30 s')), 30_000);
      const onData = () => {
        if (!cutLine.test(env.daemon.stderr)) return;
        clearTimeout(bound);
        stream.off('data', onData);
        resolve();
      };
      stream.on('data', onData);
    });
    const u = new URL(env.endpoint);
    const s = (await signer(env).sign({ method: 'GET', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${B}/pinned`, query: {}, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } as never)) as unknown as { headers: Record<string, string> };
    const sock = net.connect(Number(u.port), u.hostname);
    sock.on('error', () => {});
    sock.write(`GET /${B}/pinned HTTP/1.1\r\n${Object.entries(s.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`);
    // The head and first bytes, then the client stops reading.
    await new Promise<void>((resolve) => sock.once('data', () => resolve()));
    sock.pause();
    // Deleted while the read holds it: the file stays for the reader.
    await env.sdk.send(new DeleteObjectCommand({ Bucket: B, Key: 'pinned' }));
    assert.ok(fs.existsSync(file), 'the file of a version being read is kept');
    await cut;
    // Freed after the reader's release, asynchronously (no event to wait on): bounded poll.
    const deadline = Date.now() + 10_000;
    while ((fs.existsSync(file) || openOn(file) > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!fs.existsSync(file), 'the deleted object\'s data file is freed once the cut response lets go');
    assert.equal(openOn(file), 0, 'no descriptor of the daemon left on it');
    sock.destroy();
  });
  after(async () => {
    await env.cleanup();
  });

  it(`a reader taking ${RATE_BYTES_PER_S} B/s in ${TICK_MS} ms steps is not cut`, async (t) => {
    const before = responseTimeouts(await scrapeMetrics(env));
    const u = new URL(env.endpoint);
    const s = (await signer(env).sign({ method: 'GET', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${B}/big`, query: {}, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } as never)) as unknown as { headers: Record<string, string> };
    const sock = net.connect(Number(u.port), u.hostname);
    sock.write(`GET /${B}/big HTTP/1.1\r\n${Object.entries(s.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`);
    let received = 0;
    const got: Buffer[] = [];
    let closed = false;
    sock.on('close', () => (closed = true));
    sock.on('error', () => {});
    const perTick = Math.max(1, Math.round((RATE_BYTES_PER_S * TICK_MS) / 1000));
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      const iv = setInterval(() => {
        for (let n = 0; n < perTick; ) {
          const b = sock.read(Math.min(perTick - n, sock.readableLength || perTick)) as Buffer | null;
          if (!b) break;
          n += b.length;
          received += b.length;
          got.push(b);
        }
        if (closed || performance.now() - t0 > RUN_MS) {
          clearInterval(iv);
          resolve();
        }
      }, TICK_MS);
    });
    const cuts = responseTimeouts(await scrapeMetrics(env)) - before;
    t.diagnostic(`received ${received} B in ${((performance.now() - t0) / 1000).toFixed(1)} s, closed=${closed}, cuts=${cuts}`);
    sock.destroy();
    const raw = Buffer.concat(got);
    const headEnd = raw.indexOf('\r\n\r\n');
    assert.match(raw.toString('latin1', 0, headEnd), /^HTTP\/1\.1 200/);
    // The reader kept reading (its timer runs late under load: a lower bound well under 15 s x 256 KiB/s).
    assert.ok(raw.length - headEnd - 4 > 2 * 1024 * 1024, `read ${raw.length} B`);
    assert.ok(raw.subarray(headEnd + 4).equals(data.subarray(0, raw.length - headEnd - 4)), 'the bytes read are the object\'s');
    assert.ok(!closed, 'the daemon closed the connection of a reader that never stopped');
    assert.equal(cuts, 0, `a steady reader was cut after ${received} B: ${env.daemon.stderr.split('\n').filter((l) => l.includes('WARN')).join('\n')}`);
  });
});
