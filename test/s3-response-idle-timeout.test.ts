// The S3 front end's send idle timeout (server.ts ResponseSink, config
// s3.sendIdleTimeoutMs): a client that stops reading a GET response is cut
// and counted, one that reads slowly with pauses shorter than the timeout is
// not. Real daemon, a real TCP socket that stops reading, the JS SDK.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { scrapeMetrics, signer, startS3, type S3Env } from './helpers/s3-env.js';

/** The daemon's s3.sendIdleTimeoutMs. */
const SEND_IDLE_MS = 2000;
/**
 * Far more than loopback's socket buffers (tcp_wmem + tcp_rmem, up to ~10 MiB)
 * plus the daemon's 4 MiB read block: a client that stops reading leaves the
 * daemon a write it cannot finish.
 */
const OBJECT_BYTES = 48 * 1024 * 1024;
/**
 * The slow reader's object: past the socket buffers by several 4 MiB pieces,
 * each of which, read 1 MiB per burst, completes only after longer than the
 * timeout; progress inside a piece is what keeps the connection.
 */
const SLOW_OBJECT_BYTES = 24 * 1024 * 1024;

const responseTimeouts = (metrics: string) => Number(/^couchestor_s3_idle_timeouts_total\{direction="response"\} (\S+)$/m.exec(metrics)?.[1] ?? NaN);

describe('S3 responses: a client that stops reading is cut after s3.sendIdleTimeoutMs', () => {
  let env: S3Env;
  const B = 'send-idle';
  const data = randomBytes(OBJECT_BYTES);
  const slowData = randomBytes(SLOW_OBJECT_BYTES);

  before(async () => {
    env = await startS3({ config: `s3: {sendIdleTimeoutMs: ${SEND_IDLE_MS}}\n` });
    await env.sdk.send(new CreateBucketCommand({ Bucket: B }));
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'big', Body: data }));
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'small', Body: 'served' }));
    await env.sdk.send(new PutObjectCommand({ Bucket: B, Key: 'slow', Body: slowData }));
  });
  after(async () => {
    await env.cleanup();
  });

  /** A GET of bucket/key on a raw socket; `reader` decides when the socket reads. */
  async function rawGet(key: string): Promise<net.Socket> {
    const u = new URL(env.endpoint);
    const s = (await signer(env).sign({ method: 'GET', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path: `/${B}/${key}`, query: {}, headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } as never)) as unknown as { headers: Record<string, string> };
    const sock = net.connect(Number(u.port), u.hostname);
    sock.write(`GET /${B}/${key} HTTP/1.1\r\n${Object.entries(s.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`);
    return sock;
  }

  /** Resolves when the daemon's stderr has a line matching `re` (it writes one per event); rejects after `boundMs`. */
  function daemonLogs(re: RegExp, boundMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const stream = env.daemon.proc.stderr!;
      const bound = setTimeout(() => {
        stream.off('data', onData);
        reject(new Error(`the daemon logged no ${re} within ${boundMs} ms`));
      }, boundMs);
      const onData = () => {
        if (!re.test(env.daemon.stderr)) return;
        clearTimeout(bound);
        stream.off('data', onData);
        resolve();
      };
      stream.on('data', onData);
    });
  }

  it('a socket that stops reading mid-body is closed by the daemon, logged and counted; other clients are served meanwhile', async () => {
    const before = responseTimeouts(await scrapeMetrics(env));
    const cut = /WARN s3: client stopped reading a response: connection closed bucket=send-idle key=big idleMs=2000 sentBytes=\d+ responseBytes=50331648/;
    assert.doesNotMatch(env.daemon.stderr, cut);
    // Upper bound only: without the timeout the daemon holds the socket for its 1 h request timeout.
    const logged = daemonLogs(cut, 20 * SEND_IDLE_MS);
    const t0 = performance.now();
    const sock = await rawGet('big');
    const received: Buffer[] = [];
    // Read the head and the first bytes, then stop reading (the kernel's buffers fill, then the daemon's write stalls).
    sock.once('data', (d: Buffer) => {
      received.push(d);
      sock.pause();
    });
    const got = await env.sdk.send(new GetObjectCommand({ Bucket: B, Key: 'small' }));
    assert.equal(await got.Body!.transformToString(), 'served', 'another client is served while the stalled response is open');
    await logged;
    const cutAfterMs = performance.now() - t0;
    assert.ok(cutAfterMs >= SEND_IDLE_MS, `cut after ${cutAfterMs.toFixed(0)} ms, before the ${SEND_IDLE_MS} ms timeout`);
    // A client that reads again finds the connection closed short of the object.
    const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => received.push(d));
    sock.resume();
    await closed;
    const raw = Buffer.concat(received);
    const headEnd = raw.indexOf('\r\n\r\n');
    assert.match(raw.toString('latin1', 0, headEnd), /^HTTP\/1\.1 200[^]*content-length: 50331648/i);
    const bodyBytes = raw.length - headEnd - 4;
    assert.ok(bodyBytes < OBJECT_BYTES, `the connection closed after ${bodyBytes} of ${OBJECT_BYTES} body bytes`);
    assert.ok(raw.subarray(headEnd + 4).equals(data.subarray(0, bodyBytes)), 'what was sent is the object\'s first bytes');
    assert.equal(responseTimeouts(await scrapeMetrics(env)) - before, 1, 'couchestor_s3_idle_timeouts_total{direction="response"} counted it once');
  });

  it('a client that reads 1 MiB bursts with pauses shorter than the timeout gets the whole object (a 4 MiB write takes longer than the timeout), and nothing is counted', async () => {
    const before = responseTimeouts(await scrapeMetrics(env));
    const sock = await rawGet('slow');
    const chunks: Buffer[] = [];
    let receivedBytes = 0;
    let headBytes = -1;
    let pauses = 0;
    const done = new Promise<void>((resolve, reject) => {
      sock.on('error', reject);
      sock.on('close', () => reject(new Error(`the connection closed after ${receivedBytes} bytes`)));
      sock.on('data', (d: Buffer) => {
        chunks.push(d);
        receivedBytes += d.length;
        if (headBytes < 0) {
          const end = Buffer.concat(chunks).indexOf('\r\n\r\n');
          if (end >= 0) headBytes = end + 4;
        }
        if (headBytes >= 0 && receivedBytes - headBytes >= SLOW_OBJECT_BYTES) return resolve();
        // After each ~1 MiB read, stop reading for 0.3 of the timeout (the client's own pacing, not a synchronisation).
        if (receivedBytes > (pauses + 1) * 1024 * 1024) {
          pauses++;
          sock.pause();
          setTimeout(() => sock.resume(), SEND_IDLE_MS * 0.3);
        }
      });
    });
    await done;
    sock.removeAllListeners('close');
    sock.destroy();
    const raw = Buffer.concat(chunks);
    const headEnd = raw.indexOf('\r\n\r\n');
    assert.match(raw.toString('latin1', 0, headEnd), /^HTTP\/1\.1 200[^]*content-length: 25165824/i);
    assert.ok(raw.subarray(headEnd + 4).equals(slowData), 'the slow reader got every byte');
    assert.ok(pauses >= 20, `the reader paused ${pauses} times`);
    assert.equal(responseTimeouts(await scrapeMetrics(env)) - before, 0, env.daemon.stderr.split('\n').filter((l) => l.includes('WARN')).join('\n'));
  });
});
