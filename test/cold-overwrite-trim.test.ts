// Overwrites, write_zeroes and trims on a cold volume, driven by nbdsh from a
// seeded op list and checked against a byte model: over destaged stripes (as
// journal overlays), after destage, and after a SIGKILL replay; block_status
// never calls a chunk with data a hole, nor a non-zero range zero.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, nbdsh, run } from './helpers/daemon.js';
import { MiB, assertSameBytes, coldStatus, createVolume, destage, patternBytes, prng, readExport, startColdDaemon } from './helpers/cold.js';

const VOLUME_BYTES = 16 * MiB;
const CHUNK_BYTES = MiB;
const STATE_HOLE = 1;
const STATE_ZERO = 2;

type Op = { kind: 'write'; offsetBytes: number; lengthBytes: number; blobAt: number } | { kind: 'zero' | 'trim'; offsetBytes: number; lengthBytes: number; noHole: boolean };

/**
 * Seeded ops: unaligned writes (some crossing chunk boundaries), zeroes and
 * trims of partial and whole chunks. Applied to `model` as they are made.
 */
function makeOps(seed: number, count: number, model: Buffer): { ops: Op[]; blob: Buffer } {
  const rnd = prng(seed);
  const ops: Op[] = [];
  const blobs: Buffer[] = [];
  let blobBytes = 0;
  for (let i = 0; i < count; i++) {
    const r = rnd() % 10;
    if (r < 6) {
      const lengthBytes = 1 + (rnd() % (300 * 1024));
      const offsetBytes = rnd() % (VOLUME_BYTES - lengthBytes);
      const data = patternBytes(lengthBytes + 3, seed * 1000 + i).subarray(0, lengthBytes);
      ops.push({ kind: 'write', offsetBytes, lengthBytes, blobAt: blobBytes });
      blobs.push(data);
      blobBytes += lengthBytes;
      data.copy(model, offsetBytes);
    } else {
      // Half of these are whole, aligned chunks (metadata-only discards on hot volumes).
      const whole = rnd() % 2 === 0;
      const c = rnd() % (VOLUME_BYTES / CHUNK_BYTES - 1);
      const offsetBytes = whole ? c * CHUNK_BYTES : rnd() % (VOLUME_BYTES - 2 * CHUNK_BYTES);
      const lengthBytes = whole ? CHUNK_BYTES * (1 + (rnd() % 2)) : 1 + (rnd() % (2 * CHUNK_BYTES));
      ops.push({ kind: r < 8 ? 'zero' : 'trim', offsetBytes, lengthBytes, noHole: rnd() % 2 === 0 });
      // A cold volume journals a trim as zeros: trimmed bytes must read as zero, not stale data.
      model.fill(0, offsetBytes, offsetBytes + lengthBytes);
    }
  }
  return { ops, blob: Buffer.concat(blobs) };
}

/** Sends the ops through nbdsh (libnbd), then FLUSH. */
function applyOps(d: TestDaemon, work: string, ops: Op[], blob: Buffer): void {
  const blobFile = path.join(work, 'blob.bin');
  fs.writeFileSync(blobFile, blob);
  const opsFile = path.join(work, 'ops.json');
  fs.writeFileSync(opsFile, JSON.stringify(ops));
  nbdsh(
    [
      'import json',
      `h.connect_uri(${JSON.stringify(d.exportUri('c1'))})`,
      'assert h.can_trim() and h.can_zero()',
      `blob = open(${JSON.stringify(blobFile)}, 'rb').read()`,
      `for op in json.load(open(${JSON.stringify(opsFile)})):`,
      "  if op['kind'] == 'write':",
      "    h.pwrite(blob[op['blobAt']:op['blobAt'] + op['lengthBytes']], op['offsetBytes'])",
      "  elif op['kind'] == 'zero':",
      "    h.zero(op['lengthBytes'], op['offsetBytes'], nbd.CMD_FLAG_NO_HOLE if op['noHole'] else 0)",
      '  else:',
      "    h.trim(op['lengthBytes'], op['offsetBytes'])",
      'h.flush()',
    ].join('\n'),
  );
}

/** base:allocation over the whole export: [offset, length, flags] triples. */
function blockStatus(d: TestDaemon): [number, number, number][] {
  const out = nbdsh(
    [
      'import json, sys',
      'h2 = nbd.NBD()',
      'h2.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)',
      `h2.connect_uri(${JSON.stringify(d.exportUri('c1'))})`,
      'ext = []',
      'def cb(ctx, off, entries, err):',
      '  pos = off',
      '  for i in range(0, len(entries), 2):',
      '    ext.append([pos, entries[i], entries[i + 1]])',
      '    pos += entries[i]',
      'pos = 0',
      `while pos < ${VOLUME_BYTES}:`,
      `  h2.block_status(${VOLUME_BYTES} - pos, pos, cb)`,
      '  pos = ext[-1][0] + ext[-1][1]',
      'sys.stdout.write(json.dumps(ext))',
    ].join('\n'),
  );
  return JSON.parse(out) as [number, number, number][];
}

function assertBlockStatusMatches(d: TestDaemon, model: Buffer, phase: string): void {
  const ext = blockStatus(d);
  const covered = ext.reduce((s, [, len]) => s + len, 0);
  assert.equal(covered, VOLUME_BYTES, `${phase}: extents cover the export`);
  for (const [off, len, flags] of ext) {
    const bytes = model.subarray(off, Math.min(off + len, VOLUME_BYTES));
    if (flags & STATE_ZERO) assert.ok(bytes.every((b) => b === 0), `${phase}: ${off}+${len} reported zero but holds data`);
    if (flags & STATE_HOLE) assert.ok(bytes.every((b) => b === 0), `${phase}: ${off}+${len} reported a hole but holds data`);
  }
  // Every chunk holding a non-zero byte is reported as data.
  for (let c = 0; c < VOLUME_BYTES / CHUNK_BYTES; c++) {
    if (model.subarray(c * CHUNK_BYTES, (c + 1) * CHUNK_BYTES).every((b) => b === 0)) continue;
    const e = ext.find(([off, len]) => off <= c * CHUNK_BYTES && c * CHUNK_BYTES < off + len)!;
    assert.equal(e[2] & STATE_HOLE, 0, `${phase}: chunk ${c} holds data but is reported as a hole`);
  }
}

test('partial overwrites, write_zeroes and trims of destaged cold chunks match a model before and after destage and after SIGKILL replay', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cold-overwrite-'));
  let d = await startColdDaemon();
  const dataDir = d.dataDir;
  const out = path.join(work, 'out.bin');
  try {
    await createVolume(d, 'c1', VOLUME_BYTES, 'cold');
    // Chunks 0-11 written and destaged; 12-15 never written.
    const model = Buffer.alloc(VOLUME_BYTES);
    patternBytes(12 * MiB, 0x0ce).copy(model);
    fs.writeFileSync(path.join(work, 'src.bin'), model);
    run('nbdcopy', [path.join(work, 'src.bin'), d.exportUri('c1')]);
    await destage(d);
    assert.equal((await coldStatus(d)).stripes.Healthy, 12);
    assertBlockStatusMatches(d, model, 'destaged');

    // Round 1: journal overlays on top of stripes (mixed reads).
    const r1 = makeOps(1, 80, model);
    applyOps(d, work, r1.ops, r1.blob);
    assert.ok((await coldStatus(d)).journalBytes > 0);
    assertSameBytes(readExport(d, 'c1', out), model, 'round 1 over stripes (journal overlay)');
    assertBlockStatusMatches(d, model, 'round 1 in the journal');
    await destage(d);
    assert.equal((await coldStatus(d)).journalBytes, 0);
    assertSameBytes(readExport(d, 'c1', out), model, 'round 1 destaged');
    assertBlockStatusMatches(d, model, 'round 1 destaged');

    // Round 2 flushed, then SIGKILL: the journal replays the same result.
    const r2 = makeOps(2, 80, model);
    applyOps(d, work, r2.ops, r2.blob);
    await d.kill();
    d = await TestDaemon.start({ dataDir });
    assertSameBytes(readExport(d, 'c1', out), model, 'round 2 after SIGKILL replay');
    await destage(d);
    assertSameBytes(readExport(d, 'c1', out), model, 'round 2 replayed and destaged');
    assertBlockStatusMatches(d, model, 'round 2 destaged');

    // Whole-chunk zeroes leave nothing to store: a fully zeroed chunk becomes a hole.
    nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\nh.zero(${2 * MiB}, ${3 * MiB})\nh.trim(${MiB}, ${5 * MiB})\nh.flush()`);
    model.fill(0, 3 * MiB, 6 * MiB);
    await destage(d);
    assertSameBytes(readExport(d, 'c1', out), model, 'chunks 3-5 zeroed and destaged');
    const ext = blockStatus(d);
    for (const c of [3, 4, 5]) {
      const e = ext.find(([off, len]) => off <= c * MiB && c * MiB < off + len)!;
      assert.equal(e[2], STATE_HOLE | STATE_ZERO, `zeroed chunk ${c} is a hole`);
    }
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
