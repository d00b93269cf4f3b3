// The heat samples packed in typed arrays (heat-samples.ts: 12 bytes a sample
// instead of a ~74-byte object) hold and read exactly what the plain list of
// objects did. Two checks against a straightforward reference (an array of
// Sample objects, changed as heat.ts changed it before: push, shift, filter,
// the old thin()):
// - the store alone, over random operations whose values cross its compact
//   range (offsets past 2^32, fractions, values below the first): every
//   sample equal after every operation;
// - a HeatTracker over a real VolumeManager against the same tracker with
//   the reference store, both fed the same random run: busy and idle
//   volumes (open ones and closed ones' counters), runs long enough to pass
//   the 512-sample cap and thin, the clock set back (within the tolerance
//   and past it, onto a kept sample's time), stepped ahead (past the
//   retention: the packed array shifted and compacted; past the uint32
//   offsets' 49.7 days: re-based, float64), volumes deleted and made again
//   under their name, index writes and restarts. Every sample, every reading
//   (read() over several windows, iops(), samplesHeld()) and the index's
//   kept samples equal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { HEAT_SAMPLES_DB, HeatTracker, MAX_SAMPLES_PER_VOLUME } from '../src/control/heat.js';
import { SampleSeries, type Sample, type SampleList, type SampleStore } from '../src/control/heat-samples.js';
import { openHotManager } from './helpers/volume.js';
import type { VolumeManager } from '../src/dataplane/volumes/manager.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';

const MiB = 1024 * 1024;

/** heat.ts's thin() on a list of objects, as it was before the packed store. */
function referenceThin(list: Sample[], nowMs: number, target: number): Sample[] {
  for (let relGap = 1 / 1024; ; relGap *= 2) {
    let kept = list[list.length - 1]!;
    const out: Sample[] = [kept];
    for (let i = list.length - 2; i > 0; i--) {
      if (kept.atMs - list[i - 1]!.atMs <= relGap * (nowMs - kept.atMs)) continue;
      kept = list[i]!;
      out.push(kept);
    }
    out.push(list[0]!);
    if (out.length <= target || relGap >= 1) return out.reverse();
  }
}

/** The samples as heat.ts kept them before: an array of objects. */
class ReferenceSamples implements SampleStore {
  constructor(private list: Sample[]) {}
  get length(): number {
    return this.list.length;
  }
  atMs(i: number): number {
    return this.list[i]!.atMs;
  }
  readOps(i: number): number {
    return this.list[i]!.readOps;
  }
  writeOps(i: number): number {
    return this.list[i]!.writeOps;
  }
  push(atMs: number, readOps: number, writeOps: number): void {
    this.list.push({ atMs, readOps, writeOps });
  }
  shift(): void {
    this.list.shift();
  }
  keepAtOrBefore(nowMs: number): void {
    this.list = this.list.filter((x) => x.atMs <= nowMs);
  }
  clear(): void {
    this.list = [];
  }
  thin(nowMs: number, target: number): void {
    if (this.list.length >= 2) this.list = referenceThin(this.list, nowMs, target);
  }
}

class ReferenceTracker extends HeatTracker {
  protected override newSamples(stored: readonly Sample[]): SampleStore {
    return new ReferenceSamples([...stored]);
  }
}

function all(list: SampleList | undefined): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let i = 0; i < (list?.length ?? 0); i++) out.push([list!.atMs(i), list!.readOps(i), list!.writeOps(i)]);
  return out;
}

type StoreOp =
  | { op: 'push'; dMs: number; dRead: number; dWrite: number }
  | { op: 'shift' }
  | { op: 'keep'; backMs: number }
  | { op: 'clear' }
  | { op: 'thin'; target: number };

test('packed samples equal a list of objects over random pushes, shifts, filters, thinnings and clears, values past the compact range included', () => {
  // Mostly steps that fit (ms, a few ops), sometimes ones past 2^32, fractions, or values going down.
  const delta = fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: 0, max: 5_000 }) },
    { weight: 1, arbitrary: fc.integer({ min: 2 ** 31, max: 2 ** 33 }) },
    { weight: 1, arbitrary: fc.constantFrom(0.5, -1, -(2 ** 32), 2 ** 45) },
  );
  const op: fc.Arbitrary<StoreOp> = fc.oneof(
    { weight: 20, arbitrary: fc.record({ op: fc.constant('push' as const), dMs: delta, dRead: delta, dWrite: delta }) },
    { weight: 3, arbitrary: fc.constant({ op: 'shift' as const }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('keep' as const), backMs: fc.integer({ min: 0, max: 20_000 }) }) },
    { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('thin' as const), target: fc.integer({ min: 1, max: 40 }) }) },
  );
  fc.assert(
    fc.property(fc.array(op, { minLength: 1, maxLength: 400, size: 'max' }), fc.integer({ min: 0, max: 2 ** 41 }), fc.integer({ min: 2, max: 64 }), (ops, startMs, maxLength) => {
      const packed = new SampleSeries(maxLength);
      const ref = new ReferenceSamples([]);
      let at = { atMs: startMs, readOps: 0, writeOps: 0 };
      for (const o of ops) {
        for (const s of [packed, ref] as SampleStore[]) {
          if (o.op === 'push') s.push(at.atMs + o.dMs, at.readOps + o.dRead, at.writeOps + o.dWrite);
          else if (o.op === 'shift') s.shift();
          else if (o.op === 'keep') s.keepAtOrBefore(at.atMs - o.backMs);
          else if (o.op === 'clear') s.clear();
          else s.thin(at.atMs + 1_000, o.target);
        }
        if (o.op === 'push') at = { atMs: at.atMs + o.dMs, readOps: at.readOps + o.dRead, writeOps: at.writeOps + o.dWrite };
        assert.deepEqual(all(packed), all(ref), `after ${JSON.stringify(o)}`);
      }
    }),
    { numRuns: 200 },
  );
});

test('packed samples stay 12 bytes a sample (uint32 offsets) for a busy volume\'s counters over days, re-based as old samples go', () => {
  const s = new SampleSeries(MAX_SAMPLES_PER_VOLUME + 2);
  // 60 days of one sample a minute at 20,000 IOPS: time and ops both pass 2^32 from the first sample.
  let ops = 0;
  const t0 = 1_700_000_000_000;
  for (let k = 0; k < 60 * 24 * 60; k++) {
    ops += 20_000 * 60;
    s.push(t0 + k * 60_000, ops, ops / 2);
    while (s.length > 2 && t0 + k * 60_000 - s.atMs(1) > 3_600_000) s.shift();
  }
  assert.equal(s.wide, false, 'offsets from a base re-set on the oldest sample kept');
  assert.deepEqual(s.at(s.length - 1), { atMs: t0 + (60 * 24 * 60 - 1) * 60_000, readOps: ops, writeOps: ops / 2 });
});

interface Script {
  steps: {
    ticks: number;
    /** Per volume slot: ops added before each tick (0: idle). */
    load: number[];
    event: { kind: 'none' | 'persist' | 'refresh' | 'restart' | 'delete' | 'create' | 'back' | 'skip'; slot: number; backMs: number; skipMs: number; windowMs: number };
  }[];
}

const SLOTS = 3;
const WINDOWS_MS = [10_000, 60_000, 300_000, 3_600_000];

test('a HeatTracker with packed samples keeps and reads what it did with objects: thinning past the cap, clock set back, deleted and remade volumes, index writes, restarts', async () => {
  const step = fc.record({
    ticks: fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: 40 }) }, { weight: 1, arbitrary: fc.integer({ min: 300, max: 700 }) }),
    load: fc.array(fc.oneof({ weight: 2, arbitrary: fc.constant(0) }, { weight: 3, arbitrary: fc.integer({ min: 1, max: 50 }) }, { weight: 1, arbitrary: fc.constant(2 ** 31) }), { minLength: SLOTS, maxLength: SLOTS }),
    event: fc.record({
      kind: fc.constantFrom('none', 'persist', 'refresh', 'restart', 'delete', 'create', 'back', 'back', 'skip', 'skip'),
      slot: fc.integer({ min: 0, max: SLOTS - 1 }),
      // Within CLOCK_BACK_TOLERANCE_MS (30 s: the samples after now go) or past it (all go). 2 s and
      // 20 s: the next tick lands on a busy volume's sample (kept: at or before now), 1.5 s between two.
      backMs: fc.constantFrom(1_500, 2_000, 2_000, 20_000, 45_000, 600_000),
      // The daemon down or the clock stepped ahead: past the retention (the samples before go, shift(),
      // and the packed array is compacted as the next ones come), or past the uint32 offsets' 49.7 days.
      skipMs: fc.constantFrom(7_200_000, 7_200_000, 50 * 86_400_000),
      windowMs: fc.constantFrom(60_000, 3_600_000, 7_200_000),
    }),
  });
  await fc.assert(
    fc.asyncProperty(fc.record({ steps: fc.array(step, { minLength: 3, maxLength: 8 }) }), async (script: Script) => runBoth(script)),
    { numRuns: 6 },
  );
});

/** One side of the comparison: a manager in its own dir and a tracker over it. */
interface Side {
  dir: string;
  m: VolumeManager;
  heat: HeatTracker;
  open: Map<string, Volume>;
}

/** Slots below this hold open volumes (their counters move at each tick); the others closed ones, lent once a step (their counters as at the close). */
const PINNED = 2;

async function runBoth(script: Script): Promise<void> {
  const sides: Side[] = [];
  try {
    for (const Tracker of [HeatTracker, ReferenceTracker]) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'heat-compact-samples-'));
      const m = await openHotManager(dir);
      sides.push({ dir, m, heat: new Tracker(m, 3_600_000, 1_000), open: new Map() });
    }
    const Trackers = [HeatTracker, ReferenceTracker];
    const live = new Set<string>();
    let made = 0;
    const names: string[] = [];
    const create = async (slot: number): Promise<void> => {
      const name = `v${slot}`;
      for (const s of sides) {
        await s.m.createVolume({ name, sizeBytes: MiB });
        if (slot < PINNED) s.open.set(name, s.m.openVolume(name));
      }
      live.add(name);
      names[slot] = name;
      made++;
    };
    for (let slot = 0; slot < SLOTS; slot++) await create(slot);
    // Far in the past: iops() reads against Date.now(), the same for both sides.
    let nowMs = Date.now() - 30 * 86_400_000;
    for (const s of sides) s.heat.sample(nowMs);
    for (const st of script.steps) {
      for (let slot = PINNED; slot < SLOTS; slot++) {
        const name = names[slot]!;
        if (!live.has(name) || st.load[slot] === 0) continue;
        for (const s of sides) {
          // A loan (a background pass's, an S3 read's): closed at its end, its counters kept by the manager.
          const v = s.m.borrowVolume(name);
          v.counters.readOps += st.load[slot]!;
          v.counters.writeOps += 1;
          s.m.giveBack(v);
        }
      }
      for (let k = 0; k < st.ticks; k++) {
        nowMs += 1_000;
        for (let slot = 0; slot < PINNED; slot++) {
          const name = names[slot]!;
          if (!live.has(name) || st.load[slot] === 0) continue;
          for (const s of sides) {
            const v = s.open.get(name)!;
            v.counters.readOps += st.load[slot]!;
            v.counters.writeOps += k % 3;
          }
        }
        for (const s of sides) s.heat.tick(nowMs);
      }
      const e = st.event;
      const name = names[e.slot]!;
      if (e.kind === 'persist') for (const s of sides) await s.heat.persist(nowMs);
      else if (e.kind === 'refresh') for (const s of sides) await s.heat.refresh(e.windowMs, undefined, nowMs);
      else if (e.kind === 'back') nowMs -= e.backMs;
      else if (e.kind === 'skip') nowMs += e.skipMs;
      else if (e.kind === 'restart') {
        // As a daemon killed after a pass's write (stop() would sample at the real clock, a month ahead of this one).
        for (const [i, s] of sides.entries()) {
          await s.heat.persist(nowMs);
          s.heat = new Trackers[i]!(s.m, 3_600_000, 1_000);
          s.heat.sample(nowMs);
        }
      } else if (e.kind === 'delete' && live.has(name)) {
        for (const s of sides) {
          s.open.delete(name);
          await s.m.deleteVolume(name);
        }
        live.delete(name);
      } else if (e.kind === 'create' && !live.has(name)) await create(e.slot);
      compare(sides, names, nowMs);
    }
    for (const s of sides) await s.heat.persist(nowMs);
    const kept = sides.map((s) => [...s.m.meta.openDB(HEAT_SAMPLES_DB).getRange()].map(({ key, value }) => [key, value]));
    assert.deepEqual(kept[0], kept[1], 'the index\'s kept samples');
    assert.ok(made >= SLOTS);
  } finally {
    for (const s of sides) {
      await s.m.close().catch(() => undefined);
      fs.rmSync(s.dir, { recursive: true, force: true });
    }
  }
}

function compare(sides: Side[], names: string[], nowMs: number): void {
  const [a, b] = sides as [Side, Side];
  const samples = (s: Side): Map<string, SampleList> => (s.heat as unknown as { samples: Map<string, SampleList> }).samples;
  assert.deepEqual([...samples(a).keys()].sort(), [...samples(b).keys()].sort(), 'volumes tracked');
  for (const name of names) {
    assert.deepEqual(all(samples(a).get(name)), all(samples(b).get(name)), `${name}'s samples`);
    assert.ok(a.heat.samplesHeld(name) <= MAX_SAMPLES_PER_VOLUME, `${name}: at most ${MAX_SAMPLES_PER_VOLUME} kept`);
    assert.equal(a.heat.samplesHeld(name), b.heat.samplesHeld(name));
    assert.deepEqual(a.heat.iops(name), b.heat.iops(name), `${name}'s iops`);
    for (const w of WINDOWS_MS) assert.deepEqual(a.heat.read(name, w, nowMs), b.heat.read(name, w, nowMs), `${name} over ${w} ms`);
  }
}
