// Crash consistency of cold volumes: SIGKILL the daemon at random moments
// while a real NBD client (libnbd via nbdsh) writes, zeroes, trims and
// flushes, and while the journal is being destaged into stripes; after each
// restart every flushed (or FUA) byte must be there, and any other byte may
// only be an older or newer version that some write really carried.
// COLD_CRASH_ROUNDS (default 50) and COLD_CRASH_SEED replay or extend a run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLIENT_ENV, TestDaemon } from './helpers/daemon.js';
import { MiB, api, coldStatus, createVolume, destage, prng, readExport, scrub, startColdDaemon } from './helpers/cold.js';

const ROUNDS = Number(process.env.COLD_CRASH_ROUNDS ?? 50);
const SEED = Number(process.env.COLD_CRASH_SEED ?? Date.now() % 1_000_000);
const VOLUME_BYTES = 16 * MiB;
const BLOCK_BYTES = 4096;
const BLOCKS = VOLUME_BYTES / BLOCK_BYTES;
/** Random bytes each round's writes slice their data from. */
const SOURCE_BYTES = 8 * MiB;
const OPS_PER_ROUND = 400;
/** During writes, kill this long (at most) after the client's first acknowledged op. */
const MAX_KILL_DELAY_MS = 400;
// A 4 MiB journal that destages from 1 MiB of live records on, and a 100 ms
// destage timer: most kill points land while stripes are being written.
const CONFIG = `demoVolume: null
coldTier:
  journalCapacityBytes: ${4 * MiB}
  destageIntervalMs: 100
  destageThresholdPercent: 25
`;

type Op =
  | { k: 'w'; off: number; len: number; src: number; fua: boolean }
  | { k: 'z' | 't'; off: number; len: number }
  | { k: 'f' };

function makeOps(rnd: () => number): Op[] {
  const ops: Op[] = [];
  for (let i = 0; i < OPS_PER_ROUND; i++) {
    const r = rnd() % 100;
    if (r < 18) {
      ops.push({ k: 'f' });
      continue;
    }
    // Block-aligned, 1..64 blocks, freely crossing chunk (1 MiB) boundaries.
    const blocks = 1 + (rnd() % 64);
    const off = (rnd() % (BLOCKS - blocks)) * BLOCK_BYTES;
    const len = blocks * BLOCK_BYTES;
    if (r < 85) ops.push({ k: 'w', off, len, src: (rnd() % ((SOURCE_BYTES - len) / BLOCK_BYTES)) * BLOCK_BYTES, fua: rnd() % 10 === 0 });
    else ops.push({ k: r < 95 ? 'z' : 't', off, len });
  }
  return ops;
}

/** The client: one op at a time, printing each op's index once it is acknowledged. */
const WRITER = `
import json, os, sys
ops = json.load(open(os.environ['CRASH_OPS']))
src = open(os.environ['CRASH_SRC'], 'rb').read()
h.connect_uri(os.environ['CRASH_URI'])
for i, op in enumerate(ops):
    try:
        k = op['k']
        if k == 'w':
            h.pwrite(src[op['src']:op['src'] + op['len']], op['off'], nbd.CMD_FLAG_FUA if op['fua'] else 0)
        elif k == 'z':
            h.zero(op['len'], op['off'])
        elif k == 't':
            h.trim(op['len'], op['off'])
        else:
            h.flush()
    except Exception as e:
        sys.stdout.write('E %d %s\\n' % (i, str(e).replace('\\n', ' ')))
        sys.stdout.flush()
        sys.exit(0)
    sys.stdout.write('%d\\n' % i)
    sys.stdout.flush()
`;

interface RoundResult {
  /** Index of the last acknowledged op, -1 if none. */
  lastDone: number;
  error: { op: number; message: string; beforeKill: boolean } | null;
  destageInFlightAtKill: boolean;
}

/**
 * Runs the writer against `d`, concurrently keeps POST /v1/destage busy, and
 * SIGKILLs the daemon after `killDelayMs` (counted from the first ack).
 */
async function crashRound(d: TestDaemon, work: string, ops: Op[], killDelayMs: number): Promise<RoundResult> {
  const env = { ...CLIENT_ENV, CRASH_OPS: path.join(work, 'ops.json'), CRASH_SRC: path.join(work, 'src.bin'), CRASH_URI: d.exportUri('c1') };
  const writer = spawn('nbdsh', ['-c', WRITER], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let stderr = '';
  let killed = false;
  let destageInFlight = false;
  let errorBeforeKill: { op: number; message: string } | null = null;
  const writerExit = new Promise<void>((resolve) => writer.once('exit', () => resolve()));
  const firstAck = new Promise<void>((resolve) => {
    writer.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const e = /^E (\d+) (.*)$/m.exec(out);
      if (e && !killed && !errorBeforeKill) errorBeforeKill = { op: Number(e[1]), message: e[2]! };
      if (/^\d+$/m.test(out)) resolve();
    });
    void writerExit.then(() => resolve());
  });
  writer.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const destageLoop = (async () => {
    while (!killed) {
      destageInFlight = true;
      try {
        await api(d, 'POST', '/v1/destage');
      } catch {
        // The daemon is killed under it, or the client keeps the journal busy: either is fine here.
      }
      destageInFlight = false;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  await firstAck;
  await new Promise((r) => setTimeout(r, killDelayMs));
  const destageInFlightAtKill = destageInFlight;
  killed = true;
  await d.kill();
  await writerExit;
  await destageLoop;
  const lines = out.split('\n').filter((l) => /^\d+$/.test(l));
  const lastDone = lines.length ? Number(lines[lines.length - 1]) : -1;
  assert.equal(lines.length, lastDone + 1, 'acks arrive in op order');
  const e = /^E (\d+) (.*)$/m.exec(out);
  if (!e && lines.length === 0) assert.fail(`writer acknowledged nothing and reported no error: ${stderr}`);
  return {
    lastDone,
    error: e ? { op: Number(e[1]), message: e[2]!, beforeKill: errorBeforeKill !== null } : null,
    destageInFlightAtKill,
  };
}

/** A round without client I/O: SIGKILL at once, or after draining the journal. */
async function quietRound(d: TestDaemon, drain: boolean): Promise<RoundResult> {
  if (drain) {
    await api(d, 'POST', '/v1/destage');
    assert.equal((await coldStatus(d)).journalBytes, 0, 'journal drained before the idle kill');
  }
  await d.kill();
  return { lastDone: -1, error: null, destageInFlightAtKill: false };
}

/**
 * Checks every block of `got`: it must hold the newest durable version (from
 * `base` and the ops that a completed FLUSH or FUA made durable), or the
 * content of a later op covering it (acknowledged-unflushed or in flight).
 */
function verifyRound(got: Buffer, base: Buffer, ops: Op[], src: Buffer, lastDone: number, what: string): void {
  let lastFlush = -1;
  for (let i = 0; i <= lastDone; i++) if (ops[i]!.k === 'f') lastFlush = i;
  // Ops that may have reached the daemon: everything acknowledged plus the one in flight.
  const reached = Math.min(ops.length - 1, lastDone + 1);
  const durable = (i: number) => i < lastFlush || (i <= lastDone && ops[i]!.k === 'w' && (ops[i] as { fua: boolean }).fua);
  /** Per block: index of the newest durable op covering it (-1 = base). */
  const newestDurable = new Int32Array(BLOCKS).fill(-1);
  /** Per block: later ops covering it (allowed alternatives). */
  const later: number[][] = Array.from({ length: BLOCKS }, () => []);
  for (let i = 0; i <= reached; i++) {
    const op = ops[i]!;
    if (op.k === 'f') continue;
    for (let b = op.off / BLOCK_BYTES; b < (op.off + op.len) / BLOCK_BYTES; b++) {
      if (durable(i)) {
        newestDurable[b] = i;
        later[b] = [];
      } else later[b]!.push(i);
    }
  }
  const zero = Buffer.alloc(BLOCK_BYTES);
  const content = (i: number, b: number): Buffer => {
    if (i < 0) return base.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES);
    const op = ops[i]!;
    if (op.k !== 'w') return zero;
    const at = op.src + b * BLOCK_BYTES - op.off;
    return src.subarray(at, at + BLOCK_BYTES);
  };
  for (let b = 0; b < BLOCKS; b++) {
    const actual = got.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES);
    if (actual.equals(content(newestDurable[b]!, b))) continue;
    if (later[b]!.some((i) => actual.equals(content(i, b)))) continue;
    assert.fail(
      `${what}: block ${b} (offset ${b * BLOCK_BYTES}) holds neither its durable version (op ${newestDurable[b]}) ` +
        `nor a later op's (${later[b]!.join(',') || 'none'}); last flush op ${lastFlush}, last acked op ${lastDone}`,
    );
  }
}

test(`SIGKILL at ${ROUNDS} random moments of writes, flushes and destaging loses no flushed byte and leaves no failed stripe`, async (t) => {
  t.diagnostic(`seed ${SEED} (COLD_CRASH_SEED=${SEED} replays this run)`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'crash-cold-'));
  let d = await startColdDaemon(CONFIG);
  const dataDir = d.dataDir;
  const rnd = prng(SEED);
  let base: Buffer = Buffer.alloc(VOLUME_BYTES);
  let acked = 0;
  let flushes = 0;
  let destageKills = 0;
  let startupKills = 0;
  let idleKills = 0;
  try {
    await createVolume(d, 'c1', VOLUME_BYTES, 'cold');
    for (let round = 0; round < ROUNDS; round++) {
      const what = `round ${round} (seed ${SEED})`;
      const ops = makeOps(rnd);
      const src = Buffer.alloc(SOURCE_BYTES);
      for (let i = 0; i < SOURCE_BYTES; i += 4) src.writeUInt32LE(rnd(), i);
      fs.writeFileSync(path.join(work, 'ops.json'), JSON.stringify(ops));
      fs.writeFileSync(path.join(work, 'src.bin'), src);
      // Most kills land during client I/O. One round in ten kills right after
      // start-up (the destager busy with the replayed journal), one in ten
      // once the journal is fully destaged and idle (the next start-up then
      // finds no journal record at all).
      const mode = rnd() % 10;
      let r: RoundResult;
      if (mode === 0) {
        startupKills++;
        r = await quietRound(d, false);
      } else if (mode === 1) {
        idleKills++;
        r = await quietRound(d, true);
      } else {
        r = await crashRound(d, work, ops, 1 + (rnd() % MAX_KILL_DELAY_MS));
      }
      if (r.error?.beforeKill) assert.fail(`${what}: op ${r.error.op} failed before the kill: ${r.error.message}`);
      if (r.destageInFlightAtKill) destageKills++;
      acked += r.lastDone + 1;
      d = await TestDaemon.start({ dataDir });
      const got = readExport(d, 'c1', path.join(work, 'out.bin'));
      // A quiet round sent nothing: every block must equal the baseline.
      verifyRound(got, base, mode <= 1 ? [] : ops, src, r.lastDone, what);
      for (let i = 0; i <= r.lastDone; i++) if (ops[i]!.k === 'f') flushes++;
      // What survived is the next round's baseline: a byte once read back
      // after a restart must stay until a later op covers it (SIGKILL keeps
      // the page cache, so nothing replayed may vanish at the next restart).
      base = got;
    }
    t.diagnostic(`${ROUNDS} kills: ${startupKills} right after start-up, ${idleKills} with the journal drained, ${destageKills} with a destage request in flight; ${acked} ops acknowledged, ${flushes} of them flushes`);
    assert.ok(destageKills >= ROUNDS / 2, `kills landed during destaging (${destageKills} of ${ROUNDS})`);
    assert.ok(flushes >= ROUNDS, `flushes were acknowledged (${flushes})`);

    const st = await coldStatus(d);
    assert.equal(st.stripes.Failed, 0, 'no stripe failed');
    assert.equal(st.failedReads, 0);
    const report = await scrub(d);
    assert.equal(report.badStripes, 0, 'scrub finds every stripe intact');
    assert.equal(report.stripes.Failed + report.stripes.Degraded + report.stripes.Reconstructing, 0);
    assert.ok(report.stripesChecked > 0, 'stripes exist to check');

    // Offline, fsck matches the index against every shard record on the pools.
    // The journal is drained first: `couchestor fsck` opens the cold tier like
    // the daemon does, so it would replay and destage leftover records while
    // it scans and then report the new stripes' shards as missing.
    await destage(d);
    assert.equal((await coldStatus(d)).journalBytes, 0);
    assert.equal(await d.stop(), 0);
    const f = d.cli('fsck');
    assert.equal(f.status, 0, `fsck: ${f.stdout}\n${f.stderr}`);
    const fsck = JSON.parse(f.stdout) as { stripes: { Healthy: number; Degraded: number; Failed: number }; badShards: unknown[]; corruptRecords: number; orphanRecords: number; tornTails: number; halfWrittenStripes: number };
    assert.deepEqual(fsck.stripes, { Healthy: report.stripesChecked, Degraded: 0, Failed: 0 });
    assert.deepEqual(fsck.badShards, []);
    t.diagnostic(`fsck: ${fsck.orphanRecords} orphan records (${fsck.halfWrittenStripes} half-written stripes), ${fsck.tornTails} torn tails, ${fsck.corruptRecords} corrupt records`);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
