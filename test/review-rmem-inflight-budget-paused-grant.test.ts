// Review of 580b448/db51883 (the daemon-wide NBD in-flight budget): a WRITE
// granted its bytes while its connection is paused for unread replies has its
// payload read all the same (as one admitted at once is), so a client that
// sends its payload before reading replies is not cut as "stalled" by a
// daemon that stopped reading it; and after a mix of requests cut short
// (disconnect mid-payload, a queued connection closing, NBD_CMD_DISC with
// requests in flight, refused requests, structured replies, CACHE, TRIM,
// WRITE_ZEROES) the budget's gauge is back to 0.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { nbdshWriteReadBack, type TestDaemon } from './helpers/daemon.js';
import { CMD, RawNbd, startNbdTestDaemon } from './helpers/nbd-client.js';

const MiB = 1024 * 1024;
const STALL_MS = 1_500;
let daemon: TestDaemon | undefined;

after(async () => {
  await daemon?.cleanup();
});

async function budgetDaemon(): Promise<TestDaemon> {
  if (daemon === undefined) {
    daemon = await startNbdTestDaemon(`limits: { inflightBytes: ${8 * MiB} }\n`, { COUCHESTOR_NBD_PAYLOAD_STALL_MS: String(STALL_MS) });
    daemon.createVolume('big', '128M', '--tier', 'hot');
  }
  return daemon;
}

async function inflightBytes(d: TestDaemon): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
  return Number(/^couchestor_nbd_inflight_bytes (\S+)$/m.exec(text)?.[1]);
}

/** Polls the gauge (the daemon's state, not a timer) until it reads `want`, for up to 5 s. */
async function gaugeReaches(d: TestDaemon, want: number): Promise<void> {
  const until = Date.now() + 5_000;
  let got = await inflightBytes(d);
  while (got !== want && Date.now() < until) {
    await new Promise((r) => setImmediate(r));
    got = await inflightBytes(d);
  }
  assert.equal(got, want, 'couchestor_nbd_inflight_bytes');
}

test('a WRITE granted while its connection is paused for unread replies has its payload read, not cut as stalled', async () => {
  const d = await budgetDaemon();
  // Unix socket: small kernel buffers, so 16 MiB cannot be sent unless the daemon reads it.
  const x = await RawNbd.connect({ path: d.info.nbd.socketPath });
  await x.handshake('big');
  // The client reads no reply until its WRITE's payload is sent (a blocking client's order).
  x.socket.pause();
  // Each READ (32, 30, 32 MiB) is larger than the 8 MiB budget: they run one at a time (alone).
  // After the second's reply 62 MiB sit unread (< 64 MiB: still reading), so the WRITE header
  // is read and queues behind the third, whose reply makes 94 MiB unread (> 64 MiB: the
  // connection is paused) just before its bytes go to the WRITE.
  const sizes = [32 * MiB, 30 * MiB, 32 * MiB];
  const reads = sizes.map((n, k) => x.command(CMD.READ, 0, k * 32 * MiB, n));
  const written = x.command(CMD.WRITE, 0, 96 * MiB, 16 * MiB);
  for (const p of [...reads, written]) p.catch(() => undefined);
  await gaugeReaches(d, 16 * MiB); // the WRITE's bytes granted, nothing else in flight
  const payload = Buffer.alloc(16 * MiB, 0x6d);
  const sent = await new Promise<boolean>((resolve) => {
    x.socket.write(payload, (err) => resolve(!err));
    x.closed.then(() => resolve(false));
  });
  x.socket.resume();
  assert.ok(sent, `the payload was not taken: the daemon dropped the client (${/write payload stalled[^\n]*/.exec(d.stderr)?.[0] ?? 'no stall logged'})`);
  const got = await Promise.all(reads);
  assert.deepEqual(got.map((r) => [r.error, r.data.length]), sizes.map((n) => [0, n]));
  assert.equal((await written).error, 0);
  const back = await x.command(CMD.READ, 0, 96 * MiB, 16 * MiB);
  assert.ok(back.data.equals(payload), 'the WRITE reads back');
  x.close();
  await gaugeReaches(d, 0);
  assert.doesNotMatch(d.stderr, /write payload stalled/);
});

test('after requests cut short or refused, and every reply kind, couchestor_nbd_inflight_bytes is back to 0', async () => {
  const d = await budgetDaemon();
  const target = { path: d.info.nbd.socketPath };

  // A client gone mid-payload: its 4 MiB held from the header on, given back at its close.
  const half = await RawNbd.connect(target);
  await half.handshake('big');
  half.command(CMD.WRITE, 0, 0, 4 * MiB, Buffer.alloc(MiB, 1)).catch(() => undefined);
  await gaugeReaches(d, 4 * MiB);
  half.close();
  await gaugeReaches(d, 0);

  // The whole budget held by a half-sent 8 MiB payload; a READ of another client queues behind it and its client closes.
  const holder = await RawNbd.connect(target);
  await holder.handshake('big');
  holder.command(CMD.WRITE, 0, 0, 8 * MiB, Buffer.alloc(MiB, 2)).catch(() => undefined);
  await gaugeReaches(d, 8 * MiB);
  const queued = await RawNbd.connect(target);
  await queued.handshake('big');
  queued.command(CMD.READ, 0, 0, MiB).catch(() => undefined);
  const pausesBefore = Number(/^couchestor_nbd_inflight_pauses_total (\S+)$/m.exec(await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text())?.[1]);
  assert.ok(pausesBefore >= 1);
  queued.close();
  await queued.closed;
  holder.close();
  await gaugeReaches(d, 0);

  // Structured replies: READ, CACHE, TRIM, WRITE_ZEROES, BLOCK_STATUS, refused ones (beyond the end, bad flags,
  // an unknown command), then NBD_CMD_DISC with WRITEs and READs still in flight.
  const s = await RawNbd.connect(target);
  await s.handshake('big', { structured: true, allocation: true });
  const results = await Promise.all([
    s.command(CMD.WRITE, 0, 0, 2 * MiB, Buffer.alloc(2 * MiB, 3)),
    s.command(CMD.READ, 0, 0, 2 * MiB),
    s.command(CMD.CACHE, 0, 0, 64 * MiB),
    s.command(CMD.TRIM, 0, 2 * MiB, 8 * MiB),
    s.command(CMD.WRITE_ZEROES, 0, 16 * MiB, 32 * MiB),
    s.command(CMD.BLOCK_STATUS, 0, 0, 8 * MiB),
    s.command(CMD.WRITE, 0, 127 * MiB, 2 * MiB, Buffer.alloc(2 * MiB, 4)),
    s.command(CMD.READ, 0, 127 * MiB, 2 * MiB),
    s.command(CMD.WRITE, 0x40, 0, MiB, Buffer.alloc(MiB, 5)),
    s.command(99, 0, 0, MiB),
  ]);
  assert.deepEqual(
    results.map((r) => r.error),
    [0, 0, 0, 0, 0, 0, 28, 22, 22, 22],
  );
  assert.equal(results[1]!.data.length, 2 * MiB);
  for (let k = 0; k < 6; k++) s.command(k % 2 === 0 ? CMD.WRITE : CMD.READ, 0, k * 4 * MiB, 4 * MiB, k % 2 === 0 ? Buffer.alloc(4 * MiB, 6) : undefined).catch(() => undefined);
  await s.disconnect();
  await gaugeReaches(d, 0);

  // Still serving: nothing is left held.
  nbdshWriteReadBack(d.exportUri('big'), 0x42, 8 * MiB, 64 * MiB);
  await gaugeReaches(d, 0);
});
