// A WRITE's payload counts in the daemon-wide budget (limits.inflightBytes)
// from its header on: a client that sends a header and then stops sending
// would hold those bytes for good, and with them every other client. Such a
// client is dropped once its payload gets no byte for the stall period
// (COUCHESTOR_NBD_PAYLOAD_STALL_MS, 30 s by default; 400 ms here); one that
// sends slowly but steadily is not.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { nbdshWriteReadBack, type TestDaemon } from './helpers/daemon.js';
import { CMD, RawNbd, startNbdTestDaemon } from './helpers/nbd-client.js';

const MiB = 1024 * 1024;
const STALL_MS = 400;
let daemon: TestDaemon | undefined;

after(async () => {
  await daemon?.cleanup();
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function inflightBytes(d: TestDaemon): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
  return Number(/^couchestor_nbd_inflight_bytes (\S+)$/m.exec(text)?.[1]);
}

test('a payload sent slowly but steadily (16 KiB every 150 ms) is received; one that stops holding the whole budget drops its client and the others go on', async () => {
  daemon = await startNbdTestDaemon(`limits: { inflightBytes: ${8 * MiB} }\n`, { COUCHESTOR_NBD_PAYLOAD_STALL_MS: String(STALL_MS) });

  const slow = await RawNbd.connect({ port: daemon.info.nbd.port });
  await slow.handshake('vol');
  const data = Buffer.alloc(128 * 1024, 0x5a);
  const piece = 16 * 1024;
  const written = slow.command(CMD.WRITE, 0, 0, data.length, data.subarray(0, piece));
  for (let at = piece; at < data.length; at += piece) {
    await pause(150); // 8 pieces over ~1.1 s: longer than two stall periods, never one without a byte
    slow.write(data.subarray(at, at + piece));
  }
  assert.equal((await written).error, 0);
  assert.equal(slow.isClosed, false);
  slow.close();

  // 8 MiB WRITE header, 1 MiB of its payload, then nothing: the whole budget held.
  const stalled = await RawNbd.connect({ port: daemon.info.nbd.port });
  await stalled.handshake('vol');
  const never = stalled.command(CMD.WRITE, 0, 0, 8 * MiB, Buffer.alloc(MiB, 1));
  never.catch(() => undefined);
  while ((await inflightBytes(daemon)) !== 8 * MiB) await pause(20);

  // Another client's write waits for those bytes, then goes through once the stalled client is dropped.
  const t0 = Date.now();
  nbdshWriteReadBack(daemon.exportUri('vol'), 0x77, 2 * MiB, 16 * MiB);
  await stalled.closed; // the server closed it
  await assert.rejects(never);
  assert.ok(Date.now() - t0 < 5_000, `the other client waited ${Date.now() - t0} ms`);
  assert.match(daemon.stderr, /write payload stalled: no byte of it for 400 ms \(1048576 of 8388608 received\)/);
  assert.equal(await inflightBytes(daemon), 0);
});
