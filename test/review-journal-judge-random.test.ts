// Review of the journal's crash judgement with fences (f99b0d4), short-write
// finishing (1dbb120) and close (763f5e3): random runs of a real Journal
// (appends in flight, syncs in flight, rotations every few records, releases
// that remove older files, the marker timer), a crash image taken from the
// page cache, then writes no FLUSH covered cut or torn at random, and at
// times one bit of media damage. What must hold, every run:
// - no damage: the journal opens and replays every write a FLUSH covered
//   (and every one a landed marker claims);
// - damage to a write a landed marker claims: the open refuses
//   (JournalCorrupt) and fsck reports it;
// - any damage: if the journal opens, every write a landed marker claims,
//   other than the damaged one, replays intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { JournalCorrupt, JOURNAL_HEADER_BYTES, RecordType, checkJournalDir, scanJournalFile, type Journal } from '../src/dataplane/journal/journal.js';
import { prng, tempDir } from './helpers/cold.js';
import { journalFiles, openTestJournal } from './helpers/journal.js';

const PAYLOAD_BYTES = 64;
const RUNS = 150;

/** A float in [0, 1) from the seeded mulberry32 of helpers/cold.ts, so a failing run can be replayed by its seed. */
function uniform(seed: number): () => number {
  const next = prng(seed);
  return () => next() / 4294967296;
}

function payload(seq: number): Buffer {
  const b = Buffer.alloc(PAYLOAD_BYTES);
  for (let i = 0; i < PAYLOAD_BYTES; i++) b[i] = (seq * 31 + i) & 0xff;
  return b;
}

async function run(seed: number, root: string): Promise<string> {
  const rnd = uniform(seed);
  const live = fs.mkdtempSync(path.join(root, 'live-'));
  const j = openTestJournal(live, { fileBytes: 2 + Math.floor(rnd() * 4) * (JOURNAL_HEADER_BYTES + PAYLOAD_BYTES) });
  const resolved = new Set<number>();
  const flushed = new Set<number>();
  const appends: Promise<void>[] = [];
  const syncs: Promise<void>[] = [];
  let destagedUpto = 0;
  let seq = 0;
  const steps = 10 + Math.floor(rnd() * 30);
  for (let s = 0; s < steps; s++) {
    const r = rnd();
    if (r < 0.5) {
      const mySeq = ++seq;
      const p = j.append(RecordType.Write, 1, mySeq * PAYLOAD_BYTES, PAYLOAD_BYTES, payload(mySeq)).then(() => {
        resolved.add(mySeq);
      });
      appends.push(p);
      if (rnd() < 0.3) await p;
    } else if (r < 0.65) {
      await Promise.all(appends);
    } else if (r < 0.85) {
      const covers = [...resolved];
      syncs.push(
        j.sync().then(() => {
          for (const c of covers) flushed.add(c);
        }),
      );
      if (rnd() < 0.4) await syncs[syncs.length - 1];
    } else if (r < 0.93) {
      // A destage of everything flushed up to some seq (the stripe is durable).
      const upto = Math.max(0, ...[...flushed].filter((f) => rnd() < 0.7));
      if (upto > destagedUpto) {
        j.release(1, 0, upto);
        destagedUpto = upto;
      }
    } else if (r < 0.96) {
      // Lets the marker timer write a pending marker alone.
      await new Promise((res) => setTimeout(res, 60));
    }
  }
  await Promise.all(appends);
  // The crash: the files as the page cache holds them now (syncs may still run).
  const dir = fs.mkdtempSync(path.join(root, 'crash-'));
  for (const f of journalFiles(live)) {
    try {
      fs.copyFileSync(f, path.join(dir, path.basename(f)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // removed meanwhile (destaged)
    }
  }
  const flushedAtCrash = new Set(flushed);
  await Promise.allSettled(syncs);
  await j.close();
  assert.equal(j.failed, null, `seed ${seed}: the live journal failed`);

  const files = journalFiles(dir);
  const maxClaim = () => Math.max(0, ...files.flatMap((f) => scanJournalFile(f).markers.map((m) => m.syncedSeq)));
  const claimBefore = maxClaim();
  // Writes no FLUSH covered and no marker claims: some cut whole, some torn part-way.
  for (const f of files) {
    const scan = scanJournalFile(f);
    const fd = fs.openSync(f, 'r+');
    for (const { posBytes, rec } of scan.records) {
      if (flushedAtCrash.has(rec.seq) || rec.seq <= claimBefore) continue;
      const x = rnd();
      if (x < 0.3) fs.writeSync(fd, Buffer.alloc(rec.recordBytes), 0, rec.recordBytes, posBytes);
      else if (x < 0.45) {
        const from = 1 + Math.floor(rnd() * (rec.recordBytes - 1));
        fs.writeSync(fd, Buffer.alloc(rec.recordBytes - from), 0, rec.recordBytes - from, posBytes + from);
      }
    }
    fs.closeSync(fd);
  }
  // The cut zeroes record bytes only: every marker of the image is still there (claims taken before, from an image with no gap).
  const claim = claimBefore;
  // Media damage, at times: one bit of one intact write.
  let damagedSeq = 0;
  if (rnd() < 0.5) {
    const intact = files.flatMap((f) => scanJournalFile(f).records.map((r) => ({ f, ...r })));
    if (intact.length) {
      const victim = intact[Math.floor(rnd() * intact.length)]!;
      const at = victim.posBytes + JOURNAL_HEADER_BYTES + Math.floor(rnd() * PAYLOAD_BYTES);
      const fd = fs.openSync(victim.f, 'r+');
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, at);
      b[0]! ^= 1 << Math.floor(rnd() * 8);
      fs.writeSync(fd, b, 0, 1, at);
      fs.closeSync(fd);
      damagedSeq = victim.rec.seq;
    }
  }
  // With damage, a flushed write whose marker had not landed is not protected (a double fault the design accepts: note 5).
  const mustKeep = [...new Set([...(damagedSeq > 0 ? [] : flushedAtCrash), ...Array.from({ length: claim }, (_, k) => k + 1)])].filter((s) => s > destagedUpto && s !== damagedSeq).sort((a, b) => a - b);
  const fsck = checkJournalDir(dir);
  let j2: Journal;
  try {
    j2 = openTestJournal(dir, { destagedSeq: () => destagedUpto, highestDestagedSeq: destagedUpto });
  } catch (err) {
    assert.ok(err instanceof JournalCorrupt, `seed ${seed}: open threw ${String(err)}`);
    assert.ok(damagedSeq > 0, `seed ${seed}: a crash with no damage was refused (${err.message})`);
    assert.ok(fsck.damaged.length > 0, `seed ${seed}: open refused, fsck reports no damage`);
    return 'refused';
  }
  try {
    assert.equal(fsck.damaged.length, 0, `seed ${seed}: it opened, fsck reported damage`);
    assert.ok(!(damagedSeq > 0 && damagedSeq <= claim && damagedSeq > destagedUpto), `seed ${seed}: damage to write ${damagedSeq}, claimed by a marker (${claim}), was cut instead of refused`);
    const replayed = new Map((j2.extents(1, 0) ?? []).map((e) => [e.seq, e.data!]));
    for (const s of mustKeep) assert.deepEqual(replayed.get(s), payload(s), `seed ${seed}: flushed write ${s} did not replay intact (destaged up to ${destagedUpto}, claim ${claim}, damaged ${damagedSeq})`);
  } finally {
    await j2.close();
  }
  return damagedSeq > 0 ? 'opened-damaged' : 'opened';
}

test(`${RUNS} random crash images: flushed writes replay, damage to claimed writes is refused`, { timeout: 120_000 }, async (t) => {
  const root = tempDir(t, 'couchestor-rv-judge-random-');
  const outcomes: Record<string, number> = {};
  for (let seed = 1; seed <= RUNS; seed++) {
    const o = await run(seed, root);
    outcomes[o] = (outcomes[o] ?? 0) + 1;
  }
  t.diagnostic(JSON.stringify(outcomes));
  // Every branch was exercised.
  for (const o of ['refused', 'opened', 'opened-damaged']) assert.ok((outcomes[o] ?? 0) > 0, `no run ended ${o}`);
});
