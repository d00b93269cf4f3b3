// Power cuts at random instants of a random journal workload (appends of many sizes over
// overlapping ranges of three volumes, a fifth of their payloads holding a byte-exact image of a
// journal record or sync marker of another file or an older build, FLUSHes, rotations, destage releases and file removals,
// the first two of them recycled: renamed to spares and reused by later rotations, their old items past the new end),
// through the model of helpers/power-loss-fs.ts: each crash state keeps the durable images plus,
// per 512 B or 4 KiB sector, the page cache as of some instant (writes land in any order and tear
// at sector boundaries), and any subset of the directory changes not fsynced. The journal opened
// on it, as the daemon opens it, must keep the durability contract (DESIGN.md, Write path): every
// write a completed FLUSH covered is replayed with its bytes (or a later replayed write covers
// it, or the stripe the index durable at the cut names holds it), every replayed extent is an
// append exactly as issued, and neither fsck nor the open refuses (a power cut is not damage).
// Two generations per seed: the second runs on a crash state of the first (even seeds) or
// restarts after a SIGKILL of it (odd seeds), and is cut in turn, during its open too. A third
// is a clean restart: the second closed (a completed close counts as a FLUSH of every write
// that landed), fsck on it must find no torn tail, the directory is reopened and written, and
// cut anywhere from the close's start through the reopen and its first writes: a cut after the
// close completed and before the reopen began must show no torn tail either.
// Not modelled: the index (LMDB) and the stripes (a test oracle, durable when the test says),
// media damage, I/O errors and short writes, the journal directory's own name.
//
// Reproduce a failure: POWER_LOSS_SEED=<seed printed> node --test <this file>; with
// POWER_LOSS_KEEP=<path prefix> a crash state fsck calls damaged is copied there, beside the model's log.
// POWER_LOSS_SEEDS / POWER_LOSS_FIRST_SEED / POWER_LOSS_STATES run more (a bug hunt).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { crc32c } from '@node-rs/crc32';
import { checkJournalDir, Journal, JOURNAL_DOWNGRADE_GUARD, JOURNAL_HEADER_BYTES, JOURNAL_MAGIC, RecordType, scanJournalFile } from '../src/dataplane/journal/journal.js';
import { tempDir } from './helpers/cold.js';
import { openTestJournal } from './helpers/journal.js';
import { PowerLossFs, seededRandom, type CrashStateStats, type DirModel } from './helpers/power-loss-fs.js';

const CHUNK_BYTES = 64 * 1024;
const CHUNKS_PER_VOLUME = 4;
const VOLUMES = [1, 2, 3];
/** Small files: a rotation every few appends, and files emptied by releases get removed. */
const FILE_BYTES = 48 * 1024;
/** journal.ts's MARKER_DELAY_MS: how long a sync marker waits for an append to ride on. */
const MARKER_DELAY_MS = 50;
const SEEDS = process.env.POWER_LOSS_SEED ? [Number(process.env.POWER_LOSS_SEED)] : Array.from({ length: Number(process.env.POWER_LOSS_SEEDS ?? 30) }, (_, i) => Number(process.env.POWER_LOSS_FIRST_SEED ?? 1000) + i);
/** Crash states per generation per seed. */
const STATES_PER_GENERATION = Number(process.env.POWER_LOSS_STATES ?? 16);

/** One append as the client issued it. */
interface Write {
  seq: number;
  type: RecordType;
  volumeId: number;
  offsetBytes: number;
  lengthBytes: number;
  data: Buffer | null;
  /** Clock value once the append resolved (the client saw it complete); Infinity before. */
  resolvedAt: number;
  /** Flushed in an earlier generation, before the power cut (or SIGKILL) that generation ended with. */
  flushedEarlier: boolean;
  /** A crash state after this instant must not hold it (an earlier generation's write its open dropped). */
  allowedUntil: number;
}

interface SyncCall {
  callAt: number;
  resolvedAt: number;
}

/** A chunk's index entry (destagedSeq) and its stripe, as the seq of the write each byte holds. */
interface IndexEntry {
  durableAt: number;
  destagedSeq: number;
  writerSeqs: Int32Array;
}

/** What the client did and what the stripes hold: what any crash state must replay. */
class Oracle {
  readonly writes = new Map<number, Write>();
  readonly byChunk = new Map<string, Write[]>();
  readonly syncs: SyncCall[] = [];
  /** Per chunk, entries in the order they became durable. */
  readonly index = new Map<string, IndexEntry[]>();

  add(w: Write): void {
    this.writes.set(w.seq, w);
    const key = chunkKey(w.volumeId, Math.floor(w.offsetBytes / CHUNK_BYTES));
    let list = this.byChunk.get(key);
    if (!list) this.byChunk.set(key, (list = []));
    list.push(w);
  }

  /** FLUSH contract: a write that resolved before a sync() call which completed before `cut` is durable. */
  flushed(w: Write, cut: number): boolean {
    if (w.flushedEarlier) return true;
    return this.syncs.some((s) => s.callAt > w.resolvedAt && s.resolvedAt < cut);
  }

  indexAt(key: string, cut: number): IndexEntry | undefined {
    const list = this.index.get(key) ?? [];
    let found: IndexEntry | undefined;
    for (const e of list) if (e.durableAt < cut) found = e;
    return found;
  }

  latestIndex(key: string): IndexEntry | undefined {
    return this.index.get(key)?.at(-1);
  }

  highestDestagedSeq(cut: number): number {
    let max = 0;
    for (const key of this.index.keys()) max = Math.max(max, this.indexAt(key, cut)?.destagedSeq ?? 0);
    return max;
  }
}

function chunkKey(volumeId: number, chunkIndex: number): string {
  return `${volumeId}:${chunkIndex}`;
}

function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

interface Coverage {
  crashStates: number;
  statesWithFlushedWrites: number;
  flushedWritesChecked: number;
  statesLosingWrites: number;
  statesTearingWrites: number;
  statesLosingCreates: number;
  statesUndoingUnlinks: number;
  /** States that undid a rename not yet made durable (a file made a spare, or a spare taken by a rotation). */
  statesUndoingRenames: number;
  statesWithDestagedChunks: number;
  /** Journal files created (open's head and rotations) and unlinked (destaged), over every generation's log. */
  filesCreated: number;
  filesRemoved: number;
  /** Renames to a spare name (a destaged file kept) and from one (a rotation reusing it). */
  filesRecycled: number;
  sparesReused: number;
  tornTailsCut: number;
  /** Opens right after a SIGKILL (page cache kept), checked like a crash state. */
  restartsAfterKill: number;
  /** Clean closes (generation 2's) whose head held a spare's old bytes past its end marker: the case the end marker is for. */
  cleanClosesOverSpareBytes: number;
  /** Crash states cut after a clean close completed and before the reopen (no torn tail allowed). */
  statesAfterCleanClose: number;
  /** Crash states cut during the clean close, or during the reopen and its first writes. */
  statesAroundCleanRestart: number;
}

class Run {
  readonly rng: () => number;
  private stateNo = 0;

  constructor(
    readonly t: TestContext,
    readonly plfs: PowerLossFs,
    readonly seed: number,
    readonly root: string,
    readonly cov: Coverage,
  ) {
    this.rng = seededRandom(seed);
  }

  /** The journal as the daemon opens it: destagedSeq and highestDestagedSeq from the index durable at `cut`. */
  open(dir: string, oracle: Oracle, cut: number): Journal {
    return openTestJournal(dir, {
      chunkSizeBytes: CHUNK_BYTES,
      fileBytes: FILE_BYTES,
      destagedSeq: (v, c) => oracle.indexAt(chunkKey(v, c), cut)?.destagedSeq ?? 0,
      highestDestagedSeq: oracle.highestDestagedSeq(cut),
    });
  }

  /**
   * A random workload on `j`: `steps` actions interleaved with completions of queued file calls,
   * then everything settled; or, at step `killAtStep`, a SIGKILL of the journal (plfs.kill) and
   * true returned.
   */
  async workload(j: Journal, oracle: Oracle, steps: number, killAtStep = Infinity): Promise<boolean> {
    const { plfs, rng } = this;
    const errors: Error[] = [];
    const deferred: { key: string; entry: IndexEntry; resolve: () => void }[] = [];
    let appends = 0;
    // FLUSH-heavy, or a bulk writer that rarely flushes (new files then go long unsynced).
    const syncShare = rng() < 0.5 ? 0.1 : 0.02;
    const tSync = 0.7 + syncShare;
    const tRelease = tSync + 0.08;
    const tResolve = tRelease + 0.06;
    for (let step = 0; step < steps; step++) {
      if (step === killAtStep) {
        // Between turns: no reaction of the dead journal is pending.
        plfs.kill();
        return true;
      }
      const r = rng();
      if (r < 0.4 && plfs.runOne(rng)) {
        // a queued call completed
      } else if (r < 0.7 && appends < 160) {
        appends++;
        this.append(j, oracle, errors);
      } else if (r < tSync) {
        const s: SyncCall = { callAt: plfs.mark(), resolvedAt: Infinity };
        oracle.syncs.push(s);
        j.sync().then(
          () => (s.resolvedAt = plfs.mark()),
          (err: Error) => errors.push(err),
        );
      } else if (r < tRelease) {
        this.release(j, oracle, deferred);
      } else if (r < tResolve) {
        const d = deferred.splice(Math.floor(rng() * deferred.length), 1)[0];
        if (d) {
          d.entry.durableAt = plfs.mark();
          oracle.index.get(d.key)!.push(d.entry);
          d.resolve();
        }
      } else {
        // The sync marker's timer: the marker goes alone when no append came to carry it.
        this.t.mock.timers.tick(MARKER_DELAY_MS);
      }
      await turn();
    }
    for (const d of deferred.splice(0)) {
      d.entry.durableAt = plfs.mark();
      oracle.index.get(d.key)!.push(d.entry);
      d.resolve();
    }
    this.t.mock.timers.tick(MARKER_DELAY_MS);
    await plfs.drain(rng);
    if (errors.length) throw new Error(`journal call failed during the workload: ${errors[0]!.message}`, { cause: errors[0] });
    return false;
  }

  private append(j: Journal, oracle: Oracle, errors: Error[]): void {
    const { rng } = this;
    const volumeId = VOLUMES[Math.floor(rng() * VOLUMES.length)]!;
    const chunk = Math.floor(rng() * CHUNKS_PER_VOLUME);
    const shape = rng();
    // Sector multiples mostly (NBD), a few odd sizes; small enough that ranges overlap often.
    const lengthBytes = shape < 0.4 ? 512 * (1 + Math.floor(rng() * 16)) : shape < 0.75 ? 4096 * (1 + Math.floor(rng() * 4)) : shape < 0.95 ? 1 + Math.floor(rng() * 3000) : 1;
    const aligned = shape < 0.75;
    const maxStart = CHUNK_BYTES - lengthBytes;
    const within = aligned ? Math.floor((rng() * (maxStart + 1)) / 512) * 512 : Math.floor(rng() * (maxStart + 1));
    const offsetBytes = chunk * CHUNK_BYTES + within;
    const type = rng() < 0.1 ? RecordType.Zero : RecordType.Write;
    const data = type === RecordType.Write ? Buffer.from(Array.from({ length: lengthBytes }, () => Math.floor(rng() * 256))) : null;
    // Some payloads hold an image of a journal item (a guest writing a journal file): a torn
    // write around it must not make the scan take the image for an item.
    if (data && data.length >= JOURNAL_HEADER_BYTES + 8 && rng() < 0.2) this.embedItemImage(data, oracle);
    const p = j.append(type, volumeId, offsetBytes, lengthBytes, data);
    // append numbers and indexes the record before its first await (no wait for space here).
    const seq = j.extents(volumeId, chunk)!.at(-1)!.seq;
    const w: Write = { seq, type, volumeId, offsetBytes, lengthBytes, data, resolvedAt: Infinity, flushedEarlier: false, allowedUntil: Infinity };
    oracle.add(w);
    p.then(
      () => (w.resolvedAt = this.plfs.mark()),
      (err: Error) => errors.push(err),
    );
  }

  /**
   * Writes into `data` a byte-exact image of a journal item, verifying as one: a Write record of
   * a volume written here numbered just above every seq so far (what a resync after a torn or
   * damaged item would take: replayed, it is an extent never appended), or a sync marker
   * claiming those (taken, it makes the open refuse a plain power cut). Its nonce (header bytes
   * 36-39) is another file's (random) or none (a build before nonces).
   */
  private embedItemImage(data: Buffer, oracle: Oracle): void {
    const { rng } = this;
    const seq = Math.max(0, ...oracle.writes.keys()) + 1 + Math.floor(rng() * 3);
    const marker = rng() < 0.3;
    const payloadBytes = marker ? 0 : Math.floor(rng() * Math.min(64, data.length - JOURNAL_HEADER_BYTES + 1));
    const at = Math.floor(rng() * (data.length - JOURNAL_HEADER_BYTES - payloadBytes + 1));
    const h = data.subarray(at, at + JOURNAL_HEADER_BYTES);
    h.fill(0);
    h.writeUInt32LE(JOURNAL_MAGIC, 0);
    h.writeUInt8(1, 4);
    h.writeUInt8(marker ? 3 : RecordType.Write, 5);
    if (!marker) {
      h.writeUInt32LE(VOLUMES[Math.floor(rng() * VOLUMES.length)]!, 8);
      h.writeUInt32LE(payloadBytes, 12);
      h.writeUInt32LE(Math.floor(rng() * CHUNKS_PER_VOLUME) * CHUNK_BYTES, 24);
    }
    h.writeUInt32LE(seq, 16);
    h.writeUInt32LE(rng() < 0.5 ? 0 : 1 + Math.floor(rng() * 0xfffffffe), 36);
    const payload = data.subarray(at + JOURNAL_HEADER_BYTES, at + JOURNAL_HEADER_BYTES + payloadBytes);
    h.writeUInt32LE(crc32c(payload, crc32c(h.subarray(0, 32))), 32);
  }

  /** A destage: the chunk's stripe takes its extents up to a seq, then the journal releases them (index durable first, or later through removeAfter). */
  private release(j: Journal, oracle: Oracle, deferred: { key: string; entry: IndexEntry; resolve: () => void }[]): void {
    const { rng, plfs } = this;
    const chunks = j.dirtyVolumes().flatMap((v) => j.dirtyChunks(v).map((c) => ({ v, c })));
    // One index flip per chunk at a time, as the destager does.
    const free = chunks.filter(({ v, c }) => !deferred.some((d) => d.key === chunkKey(v, c)));
    if (free.length === 0) return;
    const { v, c } = free[Math.floor(rng() * free.length)]!;
    const key = chunkKey(v, c);
    const exts = j.extents(v, c)!;
    const uptoSeq = rng() < 0.7 ? exts.at(-1)!.seq : exts[Math.floor(rng() * exts.length)]!.seq;
    const prev = oracle.latestIndex(key);
    const writerSeqs = prev ? Int32Array.from(prev.writerSeqs) : new Int32Array(CHUNK_BYTES);
    for (const e of exts) if (e.seq <= uptoSeq) writerSeqs.fill(e.seq, e.offsetBytes - c * CHUNK_BYTES, e.offsetBytes - c * CHUNK_BYTES + e.lengthBytes);
    const entry: IndexEntry = { durableAt: Infinity, destagedSeq: uptoSeq, writerSeqs };
    if (!oracle.index.has(key)) oracle.index.set(key, []);
    if (rng() < 0.5) {
      entry.durableAt = plfs.mark();
      oracle.index.get(key)!.push(entry);
      j.release(v, c, uptoSeq);
    } else {
      let resolve!: () => void;
      const durable = new Promise<void>((r) => (resolve = r));
      deferred.push({ key, entry, resolve });
      j.release(v, c, uptoSeq, durable);
    }
  }

  /**
   * Materialises the crash state of `model` at `cut`, checks it, and returns the journal opened on it (with its own model).
   * `clean`: the cut falls after a clean close completed and before anything reopened the directory.
   */
  crashAndOpen(model: DirModel, oracle: Oracle, cut: number, gen: number, clean = false): { j: Journal; model: DirModel; dir: string; stats: CrashStateStats; openedAt: number } {
    const k = this.stateNo++;
    const where = `POWER_LOSS_SEED=${this.seed} generation ${gen}, crash state ${k} at clock ${cut}`;
    const dir = path.join(this.root, `state-${gen}-${k}`);
    fs.mkdirSync(dir);
    const stats = model.crashState(cut, seededRandom(this.seed * 7919 + k), dir);
    this.noteCoverage(stats);
    const files = fs.readdirSync(dir).sort();
    const fsck = checkJournalDir(dir);
    if (process.env.POWER_LOSS_KEEP && fsck.damaged.length) {
      fs.cpSync(dir, `${process.env.POWER_LOSS_KEEP}-${this.seed}-${k}`, { recursive: true });
      fs.writeFileSync(`${process.env.POWER_LOSS_KEEP}-${this.seed}-${k}.ops`, model.ops.map((o) => JSON.stringify({ ...o, data: 'data' in o ? o.data.length : undefined, head: 'data' in o ? o.data.subarray(0, 24).toString('hex') : undefined })).join('\n') + '\n' + model.barriers.map((b) => JSON.stringify(b)).join('\n') + `\ncut ${cut}\n`);
    }
    assert.deepEqual(fsck.damaged, [], `${where}: fsck calls a pure power cut damage (files ${files.join(', ')})`);
    // Everything was fdatasynced by the close: only undone directory changes (unlinks of destaged files) can differ.
    if (clean) assert.equal(fsck.tornTails, 0, `${where}: fsck reports a torn tail after a clean close (files ${files.join(', ')})`);
    const next = this.plfs.track(dir);
    let j: Journal;
    try {
      j = this.open(dir, oracle, cut);
    } catch (err) {
      throw new Error(`${where}: the journal refused to open after a pure power cut (${stats.writesLost} writes lost, ${stats.writesTorn} torn, ${stats.createsLost} creates lost, ${stats.unlinksUndone} unlinks undone, ${stats.renamesUndone} renames undone): ${(err as Error).message}`, { cause: err });
    }
    const openedAt = this.plfs.mark();
    if (fsck.tornTails > 0) this.cov.tornTailsCut++;
    this.check(j, oracle, cut, where);
    return { j, model: next, dir, stats, openedAt };
  }

  /** The durability contract on the replayed journal over the stripes durable at `cut`. */
  check(j: Journal, oracle: Oracle, cut: number, where: string, countAs: 'crashState' | 'restart' | 'cleanRestart' = 'crashState'): void {
    for (const v of j.dirtyVolumes()) assert.ok(VOLUMES.includes(v), `${where}: replayed an extent of volume ${v}, never written`);
    let flushedHere = 0;
    let destaged = false;
    for (const v of VOLUMES) {
      for (let c = 0; c < CHUNKS_PER_VOLUME; c++) {
        const key = chunkKey(v, c);
        const entry = oracle.indexAt(key, cut);
        if (entry) destaged = true;
        const d = entry?.destagedSeq ?? 0;
        const view = entry ? Int32Array.from(entry.writerSeqs) : new Int32Array(CHUNK_BYTES);
        let prevSeq = 0;
        for (const e of j.extents(v, c) ?? []) {
          const w = oracle.writes.get(e.seq);
          const at = `${where}: replayed seq ${e.seq} (volume ${v}, offset ${e.offsetBytes}, ${e.lengthBytes} bytes)`;
          assert.ok(w, `${at} was never appended`);
          assert.ok(e.seq > prevSeq, `${at} after seq ${prevSeq}: replay out of order`);
          prevSeq = e.seq;
          assert.ok(e.seq > d, `${at} is destaged already (chunk destagedSeq ${d})`);
          assert.ok(cut <= w.allowedUntil, `${at} was dropped by an earlier open and came back`);
          assert.deepEqual([e.type, e.volumeId, e.offsetBytes, e.lengthBytes], [w.type, w.volumeId, w.offsetBytes, w.lengthBytes], `${at}: header differs from the append`);
          if (w.data === null) assert.equal(e.data, null, `${at}: a Zero record replayed with data`);
          else assert.ok(e.data !== null && e.data.equals(w.data), `${at}: bytes differ from the ones appended`);
          view.fill(e.seq, e.offsetBytes - c * CHUNK_BYTES, e.offsetBytes - c * CHUNK_BYTES + e.lengthBytes);
        }
        const need = new Int32Array(CHUNK_BYTES);
        for (const w of oracle.byChunk.get(key) ?? []) {
          if (!oracle.flushed(w, cut)) continue;
          flushedHere++;
          const from = w.offsetBytes - c * CHUNK_BYTES;
          for (let b = from; b < from + w.lengthBytes; b++) if (need[b]! < w.seq) need[b] = w.seq;
        }
        for (let b = 0; b < CHUNK_BYTES; b++) {
          if (view[b]! < need[b]!) {
            const w = oracle.writes.get(need[b]!)!;
            assert.fail(
              `${where}: flushed write seq ${w.seq} (volume ${v}, offset ${w.offsetBytes}, ${w.lengthBytes} bytes) lost at volume byte ${c * CHUNK_BYTES + b}: ` +
                `it reads seq ${view[b]} (${view[b] === 0 ? 'never written' : view[b]! <= d ? 'the stripe' : 'an older journal record'}; chunk destagedSeq ${d})`,
            );
          }
        }
      }
    }
    if (countAs === 'restart') this.cov.restartsAfterKill++;
    if (countAs !== 'crashState') return;
    this.cov.crashStates++;
    this.cov.flushedWritesChecked += flushedHere;
    if (flushedHere > 0) this.cov.statesWithFlushedWrites++;
    if (destaged) this.cov.statesWithDestagedChunks++;
  }

  /** The model's log, everything kept, is the directory as it is now (the page cache's view): the log misses nothing. */
  checkModel(model: DirModel, now: number): void {
    const dir = path.join(this.root, 'page-cache-view');
    fs.mkdirSync(dir);
    // Its own generator: the check leaves the run's random choices as they were.
    model.crashState(now, seededRandom(this.seed), dir, 'keep');
    const names = fs.readdirSync(dir).sort();
    // The downgrade guard (a directory every open makes, not a file the model logs) aside.
    assert.deepEqual(names, fs.readdirSync(model.dir).filter((n) => n !== JOURNAL_DOWNGRADE_GUARD).sort(), `POWER_LOSS_SEED=${this.seed}: the model's names differ from the directory's`);
    for (const n of names) assert.ok(fs.readFileSync(path.join(dir, n)).equals(fs.readFileSync(path.join(model.dir, n))), `POWER_LOSS_SEED=${this.seed}: the model's ${n} differs from the file`);
    fs.rmSync(dir, { recursive: true });
  }

  private noteCoverage(s: CrashStateStats): void {
    if (s.writesLost > 0 || s.zeroExtended > 0) this.cov.statesLosingWrites++;
    if (s.writesTorn > 0) this.cov.statesTearingWrites++;
    if (s.createsLost > 0) this.cov.statesLosingCreates++;
    if (s.unlinksUndone > 0) this.cov.statesUndoingUnlinks++;
    if (s.renamesUndone > 0) this.cov.statesUndoingRenames++;
  }

  async close(j: Journal, model: DirModel, dir: string): Promise<void> {
    await this.plfs.pumpUntil(j.close(), this.rng);
    await this.plfs.drain(this.rng);
    model.untrack();
    fs.rmSync(dir, { recursive: true, force: true });
  }

  /**
   * Cuts in [from, to], sorted: half uniform, half shortly after a journal file was created or
   * renamed (a rotation, an open's head, a spare made or reused), where a new file's first items
   * and the rename are not synced yet.
   */
  cuts(model: DirModel, from: number, to: number, n: number): number[] {
    const creates = model.ops.filter((o) => (o.k === 'create' || o.k === 'rename') && o.issue >= from && o.issue < to);
    return Array.from({ length: n }, (_, i) => {
      if (i % 2 === 0 || creates.length === 0) return from + Math.floor(this.rng() * (to - from + 1));
      const c = creates[Math.floor(this.rng() * creates.length)]!;
      return Math.min(to, c.issue + 1 + Math.floor(this.rng() * 40));
    }).sort((a, b) => a - b);
  }

  countFiles(model: DirModel): void {
    for (const o of model.ops) {
      if (o.k === 'create') this.cov.filesCreated++;
      if (o.k === 'unlink') this.cov.filesRemoved++;
      if (o.k === 'rename' && o.to.startsWith('journal-spare-')) this.cov.filesRecycled++;
      if (o.k === 'rename' && o.from.startsWith('journal-spare-')) this.cov.sparesReused++;
    }
  }
}

/** The writes of `prev` as the next generation sees them after the power cut at `cut` and the open on it (`j`, done at `openedAt`). */
function carryOver(prev: Oracle, cut: number, j: Journal, openedAt: number): Oracle {
  const next = new Oracle();
  const replayed = new Set<number>();
  for (const v of j.dirtyVolumes()) for (const c of j.dirtyChunks(v)) for (const e of j.extents(v, c)!) replayed.add(e.seq);
  for (const w of prev.writes.values()) {
    const flushed = prev.flushed(w, cut);
    // Replayed but never flushed: the client may have read it, and the next FLUSH covers it (it is a completed write of this run).
    next.add({ ...w, flushedEarlier: flushed, resolvedAt: replayed.has(w.seq) ? openedAt : Infinity, allowedUntil: flushed || replayed.has(w.seq) ? Infinity : openedAt });
  }
  for (const [key, list] of prev.index) {
    const e = prev.indexAt(key, cut);
    if (e) next.index.set(key, [{ ...e, durableAt: -1 }]);
  }
  return next;
}

test('power cuts at random instants of a journal workload: every flushed write is replayed with its bytes, no open refuses', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const plfs = PowerLossFs.install(t);
  const cov: Coverage = { crashStates: 0, statesWithFlushedWrites: 0, flushedWritesChecked: 0, statesLosingWrites: 0, statesTearingWrites: 0, statesLosingCreates: 0, statesUndoingUnlinks: 0, statesUndoingRenames: 0, statesWithDestagedChunks: 0, filesCreated: 0, filesRemoved: 0, filesRecycled: 0, sparesReused: 0, tornTailsCut: 0, restartsAfterKill: 0, cleanClosesOverSpareBytes: 0, statesAfterCleanClose: 0, statesAroundCleanRestart: 0 };
  const started = Date.now();
  for (const seed of SEEDS) {
    const root = tempDir(t, `couchestor-journal-power-loss-${seed}-`);
    const run = new Run(t, plfs, seed, root, cov);
    try {
      // Odd seeds: generation 1 ends in a SIGKILL, and generation 2 is the restart on its page
      // cache (what it never synced still volatile). Even seeds: generation 2 runs on one of
      // generation 1's crash states.
      const sigkill = seed % 2 === 1;
      // Generation 1: an empty journal directory.
      const dir1 = path.join(root, 'gen1');
      fs.mkdirSync(dir1);
      const m1 = plfs.track(dir1);
      const start1 = plfs.clock;
      const oracle1 = new Oracle();
      const j1 = run.open(dir1, oracle1, start1);
      const killed = await run.workload(j1, oracle1, 400, sigkill ? 60 + Math.floor(run.rng() * 300) : Infinity);
      if (!killed) await plfs.pumpUntil(j1.close(), run.rng);
      const end1 = plfs.clock;
      run.checkModel(m1, end1);
      const cuts1 = run.cuts(m1, start1, end1, STATES_PER_GENERATION);
      let gen2: { j: Journal; model: DirModel; dir: string; openedAt: number } | null = null;
      let gen2Cut = end1;
      for (const [i, cut] of cuts1.entries()) {
        const s = run.crashAndOpen(m1, oracle1, cut, 1);
        // The middle cut carries on: a second generation runs (and crashes) on the journal opened there.
        if (!sigkill && i === cuts1.length >> 1) {
          gen2 = s;
          gen2Cut = cut;
        } else await run.close(s.j, s.model, s.dir);
      }
      // Cuts during generation 2's open count too (its truncations and syncs are in the log).
      let openStart = plfs.clock;
      if (sigkill) {
        // The restart: the same directory, the same log (nothing the dead journal left unsynced is durable yet).
        const j = run.open(dir1, oracle1, end1);
        const openedAt = plfs.mark();
        run.check(j, oracle1, end1, `POWER_LOSS_SEED=${seed} restart after a SIGKILL at clock ${end1}`, 'restart');
        gen2 = { j, model: m1, dir: dir1, openedAt };
      } else {
        run.countFiles(m1);
        m1.untrack();
        openStart = gen2!.model.ops[0]?.issue ?? gen2!.openedAt;
      }
      const g = gen2!;
      const oracle2 = carryOver(oracle1, gen2Cut, g.j, g.openedAt);
      await run.workload(g.j, oracle2, 250);
      const closeCall = await cleanClose(plfs, run, g.j, oracle2);
      const closedAt = plfs.clock;
      run.checkModel(g.model, closedAt);
      for (const cut of run.cuts(g.model, Math.min(openStart, g.openedAt), closedAt, STATES_PER_GENERATION)) {
        const s = run.crashAndOpen(g.model, oracle2, cut, 2, cut >= closeCall.resolvedAt);
        await run.close(s.j, s.model, s.dir);
      }
      // Generation 3: the clean restart of generation 2's directory, on the same log.
      checkCleanClose(g.dir, seed, cov);
      const reopenAt = plfs.mark();
      const j3 = run.open(g.dir, oracle2, reopenAt);
      run.check(j3, oracle2, reopenAt, `POWER_LOSS_SEED=${seed} clean restart at clock ${reopenAt}`, 'cleanRestart');
      await run.workload(j3, oracle2, 40);
      const firstWritesAt = plfs.clock;
      await run.workload(j3, oracle2, 120);
      await cleanClose(plfs, run, j3, oracle2);
      checkCleanClose(g.dir, seed, cov);
      run.checkModel(g.model, plfs.clock);
      run.countFiles(g.model);
      // Half over the close, the window after it and the reopen with its first writes; half anywhere after the close began.
      const around = Array.from({ length: STATES_PER_GENERATION >> 1 }, () => closeCall.callAt + Math.floor(run.rng() * (firstWritesAt - closeCall.callAt + 1)));
      const cuts3 = [...around, ...run.cuts(g.model, closeCall.callAt, plfs.clock, STATES_PER_GENERATION - around.length)].sort((a, b) => a - b);
      for (const cut of cuts3) {
        const clean = cut >= closeCall.resolvedAt && cut < reopenAt;
        if (clean) cov.statesAfterCleanClose++;
        else if (cut <= firstWritesAt) cov.statesAroundCleanRestart++;
        const s = run.crashAndOpen(g.model, oracle2, cut, 3, clean);
        await run.close(s.j, s.model, s.dir);
      }
      g.model.untrack();
    } catch (err) {
      throw new Error(`POWER_LOSS_SEED=${seed}: ${(err as Error).message}`, { cause: err });
    }
  }
  const elapsedMs = Date.now() - started;
  t.diagnostic(`seeds ${SEEDS.join(',')}: ${JSON.stringify(cov)} in ${elapsedMs} ms`);
  // The run proves something only if the states it checked lost and tore writes with flushed ones at stake
  // (over the default seeds; one seed alone, to reproduce a failure, need not cover every kind).
  if (SEEDS.length < 4) return;
  assert.equal(cov.crashStates, SEEDS.length * STATES_PER_GENERATION * 3);
  assert.equal(cov.restartsAfterKill, SEEDS.filter((s) => s % 2 === 1).length);
  // What the seeds happened to exercise: held to it over the default seeds. Another range (a bug
  // hunt) passes or fails on what it checked; a kind it missed is said, not failed (seeds 55000-55029
  // had no clean close over a spare's old bytes, and every flushed write checked was replayed).
  const defaultSeeds = process.env.POWER_LOSS_SEEDS === undefined && process.env.POWER_LOSS_FIRST_SEED === undefined;
  const covered = (ok: boolean, what: string) => (defaultSeeds ? assert.ok(ok, `${what}: ${JSON.stringify(cov)}`) : ok || t.diagnostic(`not covered by these seeds: ${what}`));
  covered(cov.statesWithFlushedWrites >= cov.crashStates / 2, `only ${cov.statesWithFlushedWrites} states had flushed writes to check`);
  covered(cov.statesLosingWrites > 0 && cov.statesTearingWrites > 0 && cov.statesLosingCreates > 0 && cov.statesUndoingUnlinks > 0, 'coverage');
  covered(cov.statesWithDestagedChunks > 0 && cov.filesRemoved > 0 && cov.tornTailsCut > 0, 'coverage');
  covered(cov.filesRecycled > 0 && cov.sparesReused > 0 && cov.statesUndoingRenames > 0, 'recycling coverage');
  covered(cov.cleanClosesOverSpareBytes > 0 && cov.statesAfterCleanClose > 0 && cov.statesAroundCleanRestart > 0, 'clean restart coverage');
});

/** After a clean close of the journal on `dir` (the page cache's view, all of it fdatasynced): the head has its end, fsck finds nothing. */
function checkCleanClose(dir: string, seed: number, cov: Coverage): void {
  const [head] = fs.readdirSync(dir).filter((n) => n.startsWith('journal-') && !n.startsWith('journal-spare-')).sort().slice(-1);
  const headScan = scanJournalFile(path.join(dir, head!));
  assert.ok(headScan.ended, `POWER_LOSS_SEED=${seed}: the clean close left no end marker in ${head}`);
  if (headScan.endBytes < headScan.lengthBytes) cov.cleanClosesOverSpareBytes++;
  const fsck = checkJournalDir(dir);
  assert.deepEqual([fsck.tornTails, fsck.damaged], [0, []], `POWER_LOSS_SEED=${seed}: fsck after a clean close`);
}

/**
 * Closes `j` cleanly, recorded in `oracle` as a sync: every write that landed before the call is
 * durable once close() resolves (it fdatasyncs every open file, after the head's end marker).
 */
async function cleanClose(plfs: PowerLossFs, run: Run, j: Journal, oracle: Oracle): Promise<SyncCall> {
  const s: SyncCall = { callAt: plfs.mark(), resolvedAt: Infinity };
  oracle.syncs.push(s);
  await plfs.pumpUntil(j.close(), run.rng);
  s.resolvedAt = plfs.mark();
  await plfs.drain(run.rng);
  return s;
}
