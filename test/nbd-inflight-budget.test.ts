// The daemon-wide bound on bytes NBD requests in flight hold (limits.inflightBytes,
// src/dataplane/inflight-budget.ts): with an 8 MiB budget, clients that pipeline far
// more than that all get served (connections wait their turn, none for good), the
// bytes held never pass the budget plus one request, a request larger than the whole
// budget still runs, and a client that stops reading its replies holds none of it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { CLIENT_ENV, type TestDaemon } from './helpers/daemon.js';
import { startNbdTestDaemon } from './helpers/nbd-client.js';
import { startStuckReader } from './helpers/nbd-writer.js';

const MiB = 1024 * 1024;
const BUDGET_BYTES = 8 * MiB;
const WRITE_BYTES = 2 * MiB;

// One daemon for the file, the tests in order: the peak gauge is since start.
let daemon: TestDaemon | undefined;

after(async () => {
  await daemon?.cleanup();
});

/** The daemon with an 8 MiB budget and a 128 MiB hot volume `big` (4 clients x 32 MiB). */
async function budgetDaemon(): Promise<TestDaemon> {
  if (daemon === undefined) {
    daemon = await startNbdTestDaemon(`limits: { inflightBytes: ${BUDGET_BYTES} }\n`);
    daemon.createVolume('big', '128M', '--tier', 'hot');
  }
  return daemon;
}

/** Runs an nbdsh script without blocking the test's event loop (several run at once); its stdout. */
function nbdshAsync(script: string, timeoutMs = 9_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('nbdsh', ['-c', script], { env: CLIENT_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('close', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`nbdsh exited ${code ?? sig}${sig === 'SIGKILL' ? ` (not done within ${timeoutMs} ms)` : ''}:\n${out}\n${err}`));
    });
  });
}

/**
 * A client that writes `count` 2 MiB blocks from `base` with aio (all sent
 * without waiting for a reply), waits for every reply, then reads each block
 * back and checks its bytes (block k holds the byte `seed + k`).
 */
function pipelinedWriter(uri: string, base: number, count: number, seed: number): Promise<string> {
  return nbdshAsync(`
h.connect_uri(${JSON.stringify(uri)})
W = ${WRITE_BYTES}
bufs = [nbd.Buffer.from_bytearray(bytearray([(${seed} + k) % 256]) * W) for k in range(${count})]
cookies = [h.aio_pwrite(bufs[k], ${base} + k * W) for k in range(${count})]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
for k in range(${count}):
    got = h.pread(W, ${base} + k * W)
    assert got == bytes([(${seed} + k) % 256]) * W, "block %d reads back wrong" % k
print("ok", ${count})
`);
}

async function metrics(d: TestDaemon): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${d.info.metrics.port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(couchestor_nbd_inflight_\w+) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

test('4 clients x 16 pipelined 2 MiB writes under an 8 MiB budget: all complete, read back right, never more than budget + one request held', async () => {
  const d = await budgetDaemon();
  const uri = d.exportUri('big');
  // 128 MiB asked for at once against 8 MiB: each client's own 32 MiB is 4 budgets.
  const outs = await Promise.all([0, 1, 2, 3].map((c) => pipelinedWriter(uri, c * 32 * MiB, 16, c * 16 + 1)));
  for (const o of outs) assert.match(o, /^ok 16$/m);
  const m = await metrics(d);
  assert.equal(m.get('couchestor_nbd_inflight_limit_bytes'), BUDGET_BYTES);
  const peak = m.get('couchestor_nbd_inflight_peak_bytes');
  assert.ok(peak !== undefined && peak > 0, `peak ${peak}`);
  assert.ok(peak <= BUDGET_BYTES + WRITE_BYTES, `peak ${peak} bytes held, over the ${BUDGET_BYTES}-byte budget + one ${WRITE_BYTES}-byte request`);
  assert.ok((m.get('couchestor_nbd_inflight_pauses_total') ?? 0) > 0, 'no request waited for the budget: the test did not reach it');
  assert.equal(m.get('couchestor_nbd_inflight_bytes'), 0, 'bytes still counted with nothing in flight');
});

test('a client that stops reading its replies holds none of the budget: another client is served meanwhile', async () => {
  const d = await budgetDaemon();
  // 256 1 MiB READs, no reply ever read: the daemon stops reading it once 64 MiB of replies are queued.
  const stuck = await startStuckReader(d.exportUri('vol'), 256);
  try {
    const out = await pipelinedWriter(d.exportUri('big'), 0, 16, 7);
    assert.match(out, /^ok 16$/m);
    // The stuck client's replies are in its socket, not in flight: the budget is all free again.
    const deadline = Date.now() + 3_000;
    let m = await metrics(d);
    while (m.get('couchestor_nbd_inflight_bytes') !== 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      m = await metrics(d);
    }
    assert.equal(m.get('couchestor_nbd_inflight_bytes'), 0);
    assert.ok((m.get('couchestor_nbd_inflight_peak_bytes') ?? Infinity) <= BUDGET_BYTES + WRITE_BYTES);
  } finally {
    stuck.kill();
  }
});

test('a 32 MiB write, 4 times the budget, runs alone and completes', async () => {
  const d = await budgetDaemon();
  const out = await nbdshAsync(`
h.connect_uri(${JSON.stringify(d.exportUri('vol'))})
MiB = 1024 * 1024
data = bytes(range(256)) * (32 * MiB // 256)
h.pwrite(data, 16 * MiB)
assert h.pread(32 * MiB, 16 * MiB) == data
print("ok")
`);
  assert.match(out, /^ok$/m);
  const m = await metrics(d);
  // The write (then the read) of 32 MiB was all that was held, let in because nothing else was (the tests before peaked lower).
  assert.equal(m.get('couchestor_nbd_inflight_peak_bytes'), 32 * MiB);
  assert.equal(m.get('couchestor_nbd_inflight_bytes'), 0);
});

test('limits.inflightBytes: a value below 1 MiB, not a whole number, or a misspelt name is refused at start, naming the setting', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-limits-'));
  try {
    const load = (limits: string): string => {
      fs.writeFileSync(path.join(dir, 'couchestor.yaml'), `pools: []\ndemoVolume: null\nlimits: ${limits}\n`);
      try {
        return `loaded ${loadConfig(dir).limits.inflightBytes}`;
      } catch (err) {
        return (err as Error).message;
      }
    };
    assert.equal(load('{ inflightBytes: 16777216 }'), 'loaded 16777216');
    assert.match(load('{ inflightBytes: 1000 }'), /limits\.inflightBytes must be a whole number of bytes >= 1048576, got 1000$/);
    assert.match(load('{ inflightBytes: 16777216.5 }'), /limits\.inflightBytes must be a whole number of bytes >= 1048576, got 16777216.5$/);
    assert.match(load('{ inflightBytes: "512M" }'), /limits\.inflightBytes must be a whole number of bytes >= 1048576, got "512M"$/);
    assert.match(load('{ inflightByte: 16777216 }'), /limits\.inflightByte is not a setting \(known: inflightBytes\)/);
    assert.match(load('{}'), /^loaded 536870912$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
