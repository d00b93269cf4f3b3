// Review of db51883: a WRITE payload under 64 KiB that stops arriving is
// watched too. With limits.inflightBytes at its least (1 MiB), 16 clients that
// each send a 65,535-byte WRITE header and 100 bytes of its payload held the
// whole budget for good (only payloads of 64 KiB and more were watched), and
// every other client's requests waited behind them for ever.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { run, type TestDaemon } from './helpers/daemon.js';
import { CMD, RawNbd, startNbdTestDaemon } from './helpers/nbd-client.js';

const MiB = 1024 * 1024;
const STALL_MS = 500;
let daemon: TestDaemon | undefined;
const clients: RawNbd[] = [];

after(async () => {
  for (const c of clients) c.close();
  await daemon?.cleanup();
});

async function inflightBytes(d: TestDaemon): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
  return Number(/^couchestor_nbd_inflight_bytes (\S+)$/m.exec(text)?.[1]);
}

test('16 clients stalled in 64 KiB - 1 payloads holding a 1 MiB budget are dropped; another client is served', async () => {
  daemon = await startNbdTestDaemon(`limits: { inflightBytes: ${MiB} }\n`, { COUCHESTOR_NBD_PAYLOAD_STALL_MS: String(STALL_MS) });
  const d = daemon;
  for (let i = 0; i < 16; i++) {
    const c = await RawNbd.connect({ path: d.info.nbd.socketPath });
    clients.push(c);
    await c.handshake('vol');
    c.command(CMD.WRITE, 0, i * 65_536, 65_535, Buffer.alloc(100, i)).catch(() => undefined);
  }
  const held = 16 * 65_535;
  const until = Date.now() + 5_000;
  while ((await inflightBytes(d)) !== held && Date.now() < until) await new Promise((r) => setImmediate(r));
  assert.equal(await inflightBytes(d), held, 'the 16 payloads hold the budget');

  const t0 = Date.now();
  const out = run('nbdsh', ['-c', `
h.connect_uri(${JSON.stringify(d.exportUri('vol'))})
h.pwrite(b"\\x33" * 4096, 8 * 1024 * 1024)
assert h.pread(4096, 8 * 1024 * 1024) == b"\\x33" * 4096
print("ok")
`], { timeoutMs: 6_000 });
  assert.match(out, /^ok$/m);
  assert.ok(Date.now() - t0 < 5_000, `the other client waited ${Date.now() - t0} ms`);
  await Promise.all(clients.map((c) => c.closed));
  assert.equal((d.stderr.match(/write payload stalled: no byte of it for 500 ms \(100 of 65535 received\)/g) ?? []).length, 16);
  assert.equal(await inflightBytes(d), 0);
});
