// One volume's heat samples in memory, packed: a typed array of (atMs,
// readOps, writeOps) triples instead of an array of objects. 100,000 busy
// volumes held ~3.7 GiB as objects (~74 bytes a sample with the array's
// slot); here a sample is 12 bytes (3 x uint32 from a per-volume base), 24
// when a value does not fit that (bench/heat-memory).

/** A heat sample: cumulative ops of the volume (its id) at `atMs`. */
export interface Sample {
  atMs: number;
  readOps: number;
  writeOps: number;
}

/** Samples in time order, read by index (0 the oldest) without a Sample object made per read. */
export interface SampleList {
  readonly length: number;
  atMs(i: number): number;
  readOps(i: number): number;
  writeOps(i: number): number;
}

/** What HeatTracker keeps of a volume: the list, and the only changes it makes to it. */
export interface SampleStore extends SampleList {
  push(atMs: number, readOps: number, writeOps: number): void;
  /** Drops the oldest. */
  shift(): void;
  /** Keeps only the samples at or before `nowMs` (a clock set back). */
  keepAtOrBefore(nowMs: number): void;
  clear(): void;
  /** thinIndices() applied: at most `target` samples, spaced by age. */
  thin(nowMs: number, target: number): void;
}

const FIELDS = 3;
const UINT32_MAX = 0xffff_ffff;

/**
 * Compact mode (the usual one): each field is a uint32 offset from the
 * volume's base (its oldest value when the offsets were last set), exact
 * for integers: a span of 49 days of ms, or 4.29 G ops, a busy volume at
 * 10,000 IOPS crossing it after ~5 days. A value past that re-bases on the
 * oldest sample kept (retention drops the old ones, so that is rare: once
 * per such span); one that still does not fit (a retention longer than the
 * span, a fraction, a value below the base) turns the volume's list into
 * float64 absolute values, exact for any number, until the samples held fit
 * offsets again (narrow(), at the next thinning or move) or none are held.
 *
 * Storage is a deque in one array: samples at [head, head + length), the
 * array grown by doubling up to `maxLength` (HeatTracker's cap, 514: 512 +
 * the 2 a visit may push before it thins), moved to the front when the end
 * is reached. An idle volume holds 1 or 2 samples: a 2-sample array.
 */
export class SampleSeries implements SampleStore {
  length = 0;
  private head = 0;
  private data: Uint32Array | Float64Array;
  private baseAtMs = 0;
  private baseReadOps = 0;
  private baseWriteOps = 0;

  constructor(
    private readonly maxLength: number,
    capacity = 2,
  ) {
    this.data = new Uint32Array(capacity * FIELDS);
  }

  /** A list holding `samples` (time order), sized to them. */
  static of(samples: readonly Sample[], maxLength: number): SampleSeries {
    const s = new SampleSeries(maxLength, Math.max(2, samples.length));
    for (const x of samples) s.push(x.atMs, x.readOps, x.writeOps);
    return s;
  }

  /** Float64 absolute values (a value that does not fit the compact mode). */
  get wide(): boolean {
    return this.data instanceof Float64Array;
  }

  atMs(i: number): number {
    return this.baseAtMs + this.data[(this.head + i) * FIELDS]!;
  }

  readOps(i: number): number {
    return this.baseReadOps + this.data[(this.head + i) * FIELDS + 1]!;
  }

  writeOps(i: number): number {
    return this.baseWriteOps + this.data[(this.head + i) * FIELDS + 2]!;
  }

  at(i: number): Sample {
    return { atMs: this.atMs(i), readOps: this.readOps(i), writeOps: this.writeOps(i) };
  }

  push(atMs: number, readOps: number, writeOps: number): void {
    if (this.length === 0) {
      this.head = 0;
      // Nothing held: offsets again, from this sample (a float64 list goes back to 12 bytes a sample).
      if (this.wide) this.data = new Uint32Array(this.data.length);
      this.baseAtMs = atMs;
      this.baseReadOps = readOps;
      this.baseWriteOps = writeOps;
    }
    // Room first: makeRoom() may turn float64 values back to offsets (narrow()), which this sample must then fit.
    if ((this.head + this.length) * FIELDS === this.data.length) this.makeRoom();
    if (!this.fits(atMs, readOps, writeOps)) this.rebase(atMs, readOps, writeOps);
    const k = (this.head + this.length) * FIELDS;
    this.data[k] = atMs - this.baseAtMs;
    this.data[k + 1] = readOps - this.baseReadOps;
    this.data[k + 2] = writeOps - this.baseWriteOps;
    this.length++;
  }

  shift(): void {
    if (this.length === 0) return;
    this.head++;
    this.length--;
  }

  keepAtOrBefore(nowMs: number): void {
    let n = 0;
    for (let i = 0; i < this.length; i++) if (this.atMs(i) <= nowMs) this.move(i, n++);
    this.length = n;
  }

  clear(): void {
    this.length = 0;
    this.head = 0;
    this.data = new Uint32Array(2 * FIELDS);
  }

  thin(nowMs: number, target: number): void {
    if (this.length < 2) return; // thinIndices would name the one sample twice
    const keep = thinIndices(this.length, (i) => this.atMs(i), nowMs, target);
    // Ascending, keep[j] >= j: moved forward in place.
    for (let j = 0; j < keep.length; j++) this.move(keep[j]!, j);
    this.length = keep.length;
    if (this.wide) this.narrow();
  }

  /** Sample `from` to slot `to` (to <= from), both from the head. */
  private move(from: number, to: number): void {
    if (from === to) return;
    const d = this.data;
    const a = (this.head + from) * FIELDS;
    const b = (this.head + to) * FIELDS;
    d[b] = d[a]!;
    d[b + 1] = d[a + 1]!;
    d[b + 2] = d[a + 2]!;
  }

  private fits(atMs: number, readOps: number, writeOps: number): boolean {
    return this.wide || (offsetFits(atMs, this.baseAtMs) && offsetFits(readOps, this.baseReadOps) && offsetFits(writeOps, this.baseWriteOps));
  }

  /** The array is full at its end: move the samples to its front, or grow it. */
  private makeRoom(): void {
    if (this.wide) {
      this.narrow();
      if ((this.head + this.length) * FIELDS < this.data.length) return;
    }
    const d = this.data;
    const capacity = d.length / FIELDS;
    if (this.head > 0 && (this.length * 2 <= capacity || capacity >= this.maxLength)) {
      d.copyWithin(0, this.head * FIELDS, (this.head + this.length) * FIELDS);
    } else {
      const grown = new (d.constructor as Uint32ArrayConstructor | Float64ArrayConstructor)(Math.max(this.length + 1, Math.min(capacity * 2, this.maxLength)) * FIELDS);
      grown.set(d.subarray(this.head * FIELDS, (this.head + this.length) * FIELDS));
      this.data = grown;
    }
    this.head = 0;
  }

  /** A sample that does not fit the offsets: offsets from the lowest values held (with it), or float64. */
  private rebase(atMs: number, readOps: number, writeOps: number): void {
    const held: Sample[] = [];
    for (let i = 0; i < this.length; i++) held.push(this.at(i));
    held.push({ atMs, readOps, writeOps });
    const base = { atMs, readOps, writeOps };
    for (const x of held) {
      base.atMs = Math.min(base.atMs, x.atMs);
      base.readOps = Math.min(base.readOps, x.readOps);
      base.writeOps = Math.min(base.writeOps, x.writeOps);
    }
    const compact = held.every((x) => offsetFits(x.atMs, base.atMs) && offsetFits(x.readOps, base.readOps) && offsetFits(x.writeOps, base.writeOps));
    const capacity = Math.max(this.data.length / FIELDS, this.length + 1);
    this.data = compact ? new Uint32Array(capacity * FIELDS) : new Float64Array(capacity * FIELDS);
    this.head = 0;
    if (compact) {
      this.baseAtMs = base.atMs;
      this.baseReadOps = base.readOps;
      this.baseWriteOps = base.writeOps;
    } else {
      this.baseAtMs = 0;
      this.baseReadOps = 0;
      this.baseWriteOps = 0;
    }
    for (let i = 0; i < this.length; i++) {
      const x = held[i]!;
      this.data[i * FIELDS] = x.atMs - this.baseAtMs;
      this.data[i * FIELDS + 1] = x.readOps - this.baseReadOps;
      this.data[i * FIELDS + 2] = x.writeOps - this.baseWriteOps;
    }
  }

  /**
   * Float64 values that fit offsets again (the one that did not went: shifted
   * out past the retention, thinned, filtered) back to uint32 offsets from
   * the lowest values held, in an array of the same capacity; else nothing
   * changes. Tried where the samples are moved anyway (thin(), makeRoom()):
   * otherwise a volume idle for 50 days (its oldest sample that old) and then
   * busy stayed at 24 bytes a sample for as long as the daemon ran.
   */
  private narrow(): void {
    const n = this.length;
    if (n === 0) return; // push() starts the offsets again
    let atMs = Infinity;
    let readOps = Infinity;
    let writeOps = Infinity;
    for (let i = 0; i < n; i++) {
      atMs = Math.min(atMs, this.atMs(i));
      readOps = Math.min(readOps, this.readOps(i));
      writeOps = Math.min(writeOps, this.writeOps(i));
    }
    for (let i = 0; i < n; i++) if (!offsetFits(this.atMs(i), atMs) || !offsetFits(this.readOps(i), readOps) || !offsetFits(this.writeOps(i), writeOps)) return;
    const out = new Uint32Array(this.data.length);
    for (let i = 0; i < n; i++) {
      out[i * FIELDS] = this.atMs(i) - atMs;
      out[i * FIELDS + 1] = this.readOps(i) - readOps;
      out[i * FIELDS + 2] = this.writeOps(i) - writeOps;
    }
    this.data = out;
    this.head = 0;
    this.baseAtMs = atMs;
    this.baseReadOps = readOps;
    this.baseWriteOps = writeOps;
  }
}

/** Whether `x` is `base` + a uint32, read back exactly. */
function offsetFits(x: number, base: number): boolean {
  const d = x - base;
  return d >= 0 && d <= UINT32_MAX && Number.isInteger(d) && base + d === x;
}

/**
 * The indices (ascending) of the samples thinning keeps, of `length` in
 * time order (atMs(i) their times): at most `target`, spaced by age.
 * Walking from the newest, a sample is dropped only when the next older one
 * is within `relGap` x (its age) of the last kept one, so kept neighbours at
 * age A are at most relGap x A apart (or as far as they already were). A
 * window of length W then starts at most about relGap x W early: its reading
 * (a rate between two kept samples, exact since counters only grow) is
 * diluted by that fraction at most. The newest and oldest samples stay;
 * samples younger than sampleInterval / relGap all stay. relGap starts at
 * 1/1024 and doubles until the result fits (in memory: 1/256 for 7 d of 1 s
 * samples; in the index, one sample a pass: none for 1 h of 30 s passes, 1/16
 * for 1 h of 10 s passes, 1/8 for 24 h and 1/4 for 7 d of 30 s passes; read()
 * interpolates between kept samples, so that gap matters only as far as the
 * load within it was uneven).
 *
 * (Halving the older half at each thinning, as 5c57729 did, decayed the old
 * end geometrically: after a day of 1 s samples one sample was left hours
 * before the next, and a 6 h window read from it, about a day back.)
 */
export function thinIndices(length: number, atMs: (i: number) => number, nowMs: number, target: number): number[] {
  for (let relGap = 1 / 1024; ; relGap *= 2) {
    let kept = length - 1;
    const out: number[] = [kept];
    for (let i = length - 2; i > 0; i--) {
      if (atMs(kept) - atMs(i - 1) <= relGap * (nowMs - atMs(kept))) continue;
      kept = i;
      out.push(kept);
    }
    out.push(0);
    if (out.length <= target || relGap >= 1) return out.reverse();
  }
}
