// A model of what a power cut keeps of a directory, for in-process crash-consistency tests of
// the journal, of volume files and of hot S3 object files: every call journal.ts, volume.ts,
// dir-sync.ts and hot-segments.ts make through the `fs` module object (and fs.promises.open's
// handles of a tracked file opened to write: writev, datasync, close) on a tracked directory is logged (writes, truncates, creates, unlinks, renames, fsync/fdatasync), and any
// instant of that log can be turned into a crash state (DirModel.crashState: durable images, the
// rest kept or lost per sector and per directory change).
//
// Why at the syscall layer: SIGKILL keeps the page cache, so only a model can lose what a
// power cut loses; the test VM has no device-mapper (dm-log-writes, dm-flakey). The real
// directory stays the page cache's view (reads, stats and readdir go to it unchanged); the
// model only decides what of it would have survived.
//
// Determinism: the callback and promise calls on tracked descriptors (writev, fdatasync,
// fsync, close, rm, fs.promises.open of the directory and its handle's sync/close, of a file
// and its handle's writev/datasync/close) do not
// reach the thread pool: they are queued, and the test completes them one at a time in a
// seeded random order (runOne), so one seed gives one interleaving, completion order
// included (a writev issued first may complete last). fsync/fdatasync on tracked
// descriptors are not run for real: durability is the model's business, and skipping them
// keeps hundreds of crash states fast.
import fs from 'node:fs';
import path from 'node:path';

/** A seeded PRNG (mulberry32): uniform in [0, 1). */
/** Whether `p` has settled (fulfilled or rejected), read when the caller asks. */
function settledFlag(p: Promise<unknown>): () => boolean {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  return () => settled;
}

export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

type DirTarget = 'dir';
/** A file's data is named by inode (its content outlives its name); the directory by 'dir'. */
type Target = number | DirTarget;

/** One logged change. `issue`/`complete` are clock values; complete is unset while the call is queued. */
type Op =
  | { k: 'write'; ino: number; posBytes: number; data: Buffer; issue: number; complete?: number }
  | { k: 'trunc'; ino: number; lengthBytes: number; issue: number; complete?: number }
  | { k: 'create'; name: string; ino: number; issue: number; complete?: number }
  | { k: 'unlink'; name: string; ino: number; issue: number; complete?: number }
  | { k: 'rename'; from: string; to: string; ino: number; issue: number; complete?: number };

/** An fsync/fdatasync: it makes durable the changes of its target that completed before it was issued. */
interface Barrier {
  target: Target;
  issue: number;
  complete?: number;
}

/** What one crash state kept and lost (for the test's coverage figures). */
export interface CrashStateStats {
  sectorBytes: number;
  volatileWrites: number;
  writesKept: number;
  writesTorn: number;
  writesLost: number;
  /** Lost writes past the end of the file whose size change landed anyway (zeros). */
  zeroExtended: number;
  volatileDirOps: number;
  createsLost: number;
  unlinksUndone: number;
  /** Renames not made durable (no directory sync since) that this state undid, each as a whole. */
  renamesUndone: number;
  files: number;
}

/** The log of one directory (the journal's), from the moment it is tracked. */
export class DirModel {
  readonly ops: Op[] = [];
  readonly barriers: Barrier[] = [];
  /** The names as the page cache sees them now. */
  readonly current = new Map<string, number>();
  private readonly initialNames = new Map<string, number>();
  private readonly initialContent = new Map<number, Buffer>();
  private nextIno = 1;

  constructor(
    readonly dir: string,
    private readonly plfs: PowerLossFs,
  ) {
    // Whatever is there when tracking starts is durable (a crash state just materialised).
    for (const name of fs.readdirSync(dir)) {
      const ino = this.nextIno++;
      this.initialNames.set(name, ino);
      this.current.set(name, ino);
      this.initialContent.set(ino, fs.readFileSync(path.join(dir, name)));
    }
  }

  newIno(): number {
    return this.nextIno++;
  }

  /**
   * The crash state at `cut` (every change issued before it), written into `into` (an empty
   * directory). Durable changes are all applied. Directory changes not made durable are each
   * kept or lost on their own; a rename as a whole (the new name and the old one gone,
   * or the old name as it was), and one whose source an undone earlier change left elsewhere
   * is not applied. File data not made durable is decided per sector (512 B or
   * 4 KiB): a sector holds the page cache's content as of some instant up to the cut (the
   * writes to it that completed by then, in completion order, and any write in flight then,
   * or not), each sector its own instant: writes land in any order and tear at sector
   * boundaries, but a sector never holds a later write without an earlier one that had
   * completed before it was issued (the disk writes the sector from the page, which holds both).
   */
  crashState(cut: number, rng: () => number, into: string, forceMode?: 'lose' | 'keep' | 'mixed'): CrashStateStats {
    const sectorBytes = rng() < 0.5 ? 512 : 4096;
    // One style per state: everything volatile lost, everything kept (the page cache's view:
    // what the test checks the model against), or each sector and directory change on its own.
    const style = rng();
    const mode: 'lose' | 'keep' | 'mixed' = forceMode ?? (style < 0.15 ? 'lose' : style < 0.3 ? 'keep' : 'mixed');
    const dirKeepP = mode === 'lose' ? 0 : mode === 'keep' ? 1 : rng();
    const stats: CrashStateStats = { sectorBytes, volatileWrites: 0, writesKept: 0, writesTorn: 0, writesLost: 0, zeroExtended: 0, volatileDirOps: 0, createsLost: 0, unlinksUndone: 0, renamesUndone: 0, files: 0 };
    // Per target, the latest issue of a barrier completed before the cut: a change is durable iff it completed before that.
    const durableBefore = new Map<Target, number>();
    for (const b of this.barriers) {
      if (b.complete === undefined || b.complete >= cut) continue;
      durableBefore.set(b.target, Math.max(durableBefore.get(b.target) ?? -1, b.issue));
    }
    const durable = (o: Op, target: Target) => o.complete !== undefined && o.complete < (durableBefore.get(target) ?? -1);
    const names = new Map(this.initialNames);
    const issued = this.ops.filter((o) => o.issue < cut);
    for (const o of issued) {
      if (o.k === 'write' || o.k === 'trunc') continue;
      let apply = durable(o, 'dir');
      if (!apply) {
        stats.volatileDirOps++;
        apply = rng() < dirKeepP;
        if (!apply && o.k === 'create') stats.createsLost++;
        if (!apply && o.k === 'unlink') stats.unlinksUndone++;
        if (!apply && o.k === 'rename') stats.renamesUndone++;
      }
      if (!apply) continue;
      if (o.k === 'create') names.set(o.name, o.ino);
      else if (o.k === 'unlink') {
        if (names.get(o.name) === o.ino) names.delete(o.name);
      } else if (names.get(o.from) === o.ino) {
        names.delete(o.from);
        names.set(o.to, o.ino);
      }
    }
    for (const [name, ino] of names) {
      const fileOps = issued.filter((o): o is Extract<Op, { k: 'write' | 'trunc' }> => (o.k === 'write' || o.k === 'trunc') && o.ino === ino);
      const volatile = fileOps.filter((o): o is Extract<Op, { k: 'write' }> => o.k === 'write' && !durable(o, ino));
      // Per sector touched by a volatile write: the instant its content is from.
      const touching = new Map<number, Extract<Op, { k: 'write' }>[]>();
      for (const w of volatile) {
        for (let s = Math.floor(w.posBytes / sectorBytes); s * sectorBytes < w.posBytes + w.data.length; s++) {
          let list = touching.get(s);
          if (!list) touching.set(s, (list = []));
          list.push(w);
        }
      }
      const inflightP = mode === 'keep' ? 1 : mode === 'lose' ? 0 : 0.5;
      const landed = new Map<number, Set<Extract<Op, { k: 'write' }>>>();
      for (const [s, list] of touching) {
        const byCompletion = [...list].sort((a, b) => (a.complete ?? Infinity) - (b.complete ?? Infinity));
        const completedCount = byCompletion.filter((w) => w.complete !== undefined && w.complete < cut).length;
        const k = mode === 'lose' ? 0 : mode === 'keep' ? completedCount : Math.floor(rng() * (completedCount + 1));
        const instant = k === 0 ? -Infinity : k === completedCount ? cut : byCompletion[k - 1]!.complete!;
        const set = new Set<Extract<Op, { k: 'write' }>>();
        for (const w of list) {
          const completedBy = w.complete !== undefined && w.complete <= instant && w.complete < cut;
          const inFlight = w.issue < instant && !completedBy;
          if (completedBy || (inFlight && rng() < inflightP)) set.add(w);
        }
        landed.set(s, set);
      }
      // The file as built so far: content[0, len), grown by doubling (a large file lost or kept
      // sector by sector past its end would otherwise be copied once per sector).
      let content = Buffer.from(this.initialContent.get(ino) ?? Buffer.alloc(0));
      let len = content.length;
      const resize = (lengthBytes: number) => {
        if (lengthBytes > content.length) {
          const grown = Buffer.alloc(Math.max(lengthBytes, 2 * content.length));
          content.copy(grown, 0, 0, len);
          content = grown;
        }
        if (lengthBytes > len) content.fill(0, len, lengthBytes);
        len = lengthBytes;
      };
      const place = (posBytes: number, data: Buffer) => {
        if (posBytes + data.length > len) resize(posBytes + data.length);
        data.copy(content, posBytes);
      };
      for (const o of fileOps) {
        if (o.k === 'trunc') {
          if (durable(o, ino) || rng() < dirKeepP) resize(o.lengthBytes);
          continue;
        }
        if (durable(o, ino)) {
          place(o.posBytes, o.data);
          continue;
        }
        stats.volatileWrites++;
        let pieces = 0;
        let kept = 0;
        for (let at = o.posBytes; at < o.posBytes + o.data.length; ) {
          const s = Math.floor(at / sectorBytes);
          const end = Math.min(o.posBytes + o.data.length, (s + 1) * sectorBytes);
          const piece = o.data.subarray(at - o.posBytes, end - o.posBytes);
          pieces++;
          if (landed.get(s)!.has(o)) {
            kept++;
            place(at, piece);
          } else if (end > len && rng() < 0.3) {
            // The size change without the data (a file system that extends before it writes): zeros
            // past the old end only; the bytes below it keep what they held (a durable write's).
            stats.zeroExtended++;
            const from = Math.max(at, len);
            place(from, Buffer.alloc(end - from));
          }
          at = end;
        }
        if (kept === pieces) stats.writesKept++;
        else if (kept === 0) stats.writesLost++;
        else stats.writesTorn++;
      }
      fs.writeFileSync(path.join(into, name), content.subarray(0, len));
      stats.files++;
    }
    return stats;
  }

  /** Stops tracking (its files' descriptors must be closed). */
  untrack(): void {
    this.plfs.untrack(this);
  }
}

interface TrackedFd {
  model: DirModel;
  target: Target;
}

interface Queued {
  run(): void;
  /** What the call does in the kernel, without telling the caller: run at a SIGKILL (kill). Unset: the call is dropped. */
  effect?: () => void;
}

/** A file handle as hot-segments.ts writes through it (writev, datasync, close), its calls queued like the others. */
interface QueuedFileHandle {
  fd: number;
  writev(bufs: NodeJS.ArrayBufferView[], position?: number | null): Promise<{ bytesWritten: number; buffers: NodeJS.ArrayBufferView[] }>;
  datasync(): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** A directory handle as dir-sync.ts uses it (fd, sync, close), its calls queued like the others. */
interface QueuedDirHandle {
  fd: number;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The interception: installed once per test (restored by `t.after`), tracking any number of
 * directories. `clock` orders every logged call and every mark() the test makes.
 */
export class PowerLossFs {
  private clockValue = 0;
  private readonly models = new Map<string, DirModel>();
  private readonly fds = new Map<number, TrackedFd>();
  private queue: Queued[] = [];
  /** Descriptors of a killed process: kept open (their numbers are never reused) and every call on them swallowed. */
  private readonly deadFds = new Set<number>();

  static install(t: { after(fn: () => void): void }): PowerLossFs {
    const p = new PowerLossFs();
    p.patch(t);
    return p;
  }

  /** The next clock value: an instant the test names (an append resolved, a FLUSH answered). */
  mark(): number {
    return this.clockValue++;
  }

  get clock(): number {
    return this.clockValue;
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Starts logging `dir` (absolute), its current contents taken as durable. */
  track(dir: string): DirModel {
    const abs = path.resolve(dir);
    const m = new DirModel(abs, this);
    this.models.set(abs, m);
    return m;
  }

  untrack(m: DirModel): void {
    this.models.delete(m.dir);
    for (const [fd, t] of this.fds) if (t.model === m) this.fds.delete(fd);
  }

  /**
   * SIGKILL of the process using the tracked directories: the writes and unlinks it had
   * issued complete in the kernel (the page cache keeps them; nothing is made durable), its
   * syncs, closes and opens in flight are dropped, and no callback reaches it; its descriptors
   * are dead from now on. Call it between turns (no promise reaction of the dead process
   * pending), then open the directory again: the model's log goes on, so a later crash state
   * still loses what the dead process never synced.
   */
  kill(): void {
    const queued = this.queue;
    this.queue = [];
    for (const q of queued) q.effect?.();
    for (const fd of this.fds.keys()) this.deadFds.add(fd);
    this.fds.clear();
  }

  /** Completes one queued call, chosen by `rng`; false when none is queued. */
  runOne(rng: () => number): boolean {
    if (this.queue.length === 0) return false;
    const i = Math.floor(rng() * this.queue.length);
    const [q] = this.queue.splice(i, 1);
    q!.run();
    return true;
  }

  /** Completes queued calls (random order) until `p` settles; throws if the queue runs dry first. */
  async pumpUntil<T>(p: Promise<T>, rng: () => number): Promise<T> {
    const settled = settledFlag(p);
    await turn();
    while (!settled()) {
      if (!this.runOne(rng)) throw new Error('power-loss fs: nothing queued, and the awaited call has not settled');
      await turn();
    }
    return p;
  }

  /**
   * pumpUntil for code that also waits on I/O outside the model (the LMDB
   * index of a volume): while nothing is queued, turns pass until the other
   * I/O queues a modelled call or `p` settles. `between`, if given, runs
   * after each completed call, before the next turn (no promise reaction of
   * the caller has run yet): a test takes its crash-state cuts there.
   */
  async pumpBeside<T>(p: Promise<T>, rng: () => number, between?: () => void): Promise<T> {
    const settled = settledFlag(p);
    await turn();
    while (!settled()) {
      if (this.runOne(rng)) between?.();
      await turn();
    }
    return p;
  }

  /** Completes every queued call (and those they queue) in random order. */
  async drain(rng: () => number): Promise<void> {
    await turn();
    while (this.runOne(rng)) await turn();
  }

  private tick(): number {
    return this.clockValue++;
  }

  private modelOfDir(p: string): DirModel | undefined {
    return this.models.get(path.resolve(p));
  }

  private modelOfFile(p: string): DirModel | undefined {
    return this.models.get(path.dirname(path.resolve(p)));
  }

  private patch(t: { after(fn: () => void): void }): void {
    const real = {
      openSync: fs.openSync,
      closeSync: fs.closeSync,
      close: fs.close,
      writeSync: fs.writeSync,
      writev: fs.writev,
      write: fs.write,
      fdatasync: fs.fdatasync,
      fdatasyncSync: fs.fdatasyncSync,
      fsync: fs.fsync,
      fsyncSync: fs.fsyncSync,
      ftruncateSync: fs.ftruncateSync,
      ftruncate: fs.ftruncate,
      rm: fs.rm,
      renameSync: fs.renameSync,
      unlinkSync: fs.unlinkSync,
      promisesOpen: fs.promises.open,
      promisesRm: fs.promises.rm,
    };
    t.after(() => {
      Object.assign(fs, {
        openSync: real.openSync,
        closeSync: real.closeSync,
        close: real.close,
        writeSync: real.writeSync,
        writev: real.writev,
        write: real.write,
        fdatasync: real.fdatasync,
        fdatasyncSync: real.fdatasyncSync,
        fsync: real.fsync,
        fsyncSync: real.fsyncSync,
        ftruncateSync: real.ftruncateSync,
        ftruncate: real.ftruncate,
        rm: real.rm,
        renameSync: real.renameSync,
        unlinkSync: real.unlinkSync,
      });
      fs.promises.open = real.promisesOpen;
      fs.promises.rm = real.promisesRm;
      for (const fd of this.deadFds) real.closeSync(fd);
      this.deadFds.clear();
    });
    const enqueue = (run: () => void, effect?: () => void) => this.queue.push({ run, ...(effect ? { effect } : {}) });
    const dead = (fd: number) => this.deadFds.has(fd);
    const barrier = (tf: TrackedFd): Barrier => {
      const b: Barrier = { target: tf.target, issue: this.tick() };
      tf.model.barriers.push(b);
      return b;
    };

    fs.openSync = ((p: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode) => {
      const abs = path.resolve(String(p));
      const dirModel = this.modelOfDir(abs);
      if (dirModel) {
        const fd = real.openSync(p, flags ?? "r", mode);
        this.fds.set(fd, { model: dirModel, target: 'dir' });
        return fd;
      }
      const m = this.modelOfFile(abs);
      if (!m) return real.openSync(p, flags ?? "r", mode);
      const name = path.basename(abs);
      const existed = m.current.has(name);
      const fd = real.openSync(p, flags ?? "r", mode);
      const { creates, truncates } = openFlags(flags);
      let ino = m.current.get(name);
      if (ino === undefined) {
        if (!creates) throw new Error(`power-loss fs: ${abs} opened without O_CREAT but not in the model`);
        ino = m.newIno();
        m.current.set(name, ino);
        const at = this.tick();
        m.ops.push({ k: 'create', name, ino, issue: at, complete: at });
      } else if (existed && truncates) {
        const at = this.tick();
        m.ops.push({ k: 'trunc', ino, lengthBytes: 0, issue: at, complete: at });
      }
      this.fds.set(fd, { model: m, target: ino });
      return fd;
    }) as typeof fs.openSync;

    fs.closeSync = ((fd: number) => {
      if (dead(fd)) return;
      this.fds.delete(fd);
      real.closeSync(fd);
    }) as typeof fs.closeSync;

    fs.close = ((fd: number, cb?: (err: NodeJS.ErrnoException | null) => void) => {
      if (dead(fd)) return;
      if (!this.fds.has(fd)) return real.close(fd, cb ?? (() => undefined));
      enqueue(() => {
        this.fds.delete(fd);
        let err: NodeJS.ErrnoException | null = null;
        try {
          real.closeSync(fd);
        } catch (e) {
          err = e as NodeJS.ErrnoException;
        }
        cb?.(err);
      });
    }) as typeof fs.close;

    fs.writeSync = ((fd: number, buffer: NodeJS.ArrayBufferView, offset?: number, length?: number, position?: number) => {
      if (dead(fd)) return length ?? buffer.byteLength;
      const tf = this.fds.get(fd);
      if (!tf) return (real.writeSync as (...a: unknown[]) => number)(fd, buffer, offset, length, position);
      if (typeof tf.target !== 'number' || !Buffer.isBuffer(buffer) || typeof offset !== 'number' || typeof length !== 'number' || typeof position !== 'number') {
        throw new Error('power-loss fs: only writeSync(fd, buffer, offset, length, position) on a file is modelled');
      }
      const n = real.writeSync(fd, buffer, offset, length, position);
      const at = this.tick();
      tf.model.ops.push({ k: 'write', ino: tf.target, posBytes: position, data: Buffer.from(buffer.subarray(offset, offset + n)), issue: at, complete: at });
      return n;
    }) as typeof fs.writeSync;

    // An asynchronous write of `data` at `pos`, done by `write` when the queue runs it (or its effect alone).
    // The bytes as issued: from now on they may be in a crash state, in whole or in part.
    const queuedWrite = (model: DirModel, ino: number, pos: number, data: Buffer, write: () => number, cb: (err: NodeJS.ErrnoException | null, n: number) => void) => {
      const op: Op = { k: 'write', ino, posBytes: pos, data, issue: this.tick() };
      model.ops.push(op);
      let n = 0;
      let err: NodeJS.ErrnoException | null = null;
      const effect = () => {
        try {
          n = write();
        } catch (e) {
          err = e as NodeJS.ErrnoException;
        }
        op.complete = this.tick();
      };
      enqueue(() => {
        effect();
        cb(err, n);
      }, effect);
    };

    fs.writev = ((fd: number, bufs: NodeJS.ArrayBufferView[], pos: number, cb: (err: NodeJS.ErrnoException | null, n: number, b: NodeJS.ArrayBufferView[]) => void) => {
      if (dead(fd)) return;
      const tf = this.fds.get(fd);
      if (!tf) return real.writev(fd, bufs, pos, cb);
      if (typeof tf.target !== 'number' || typeof pos !== 'number') throw new Error('power-loss fs: only writev(fd, bufs, position, cb) on a file is modelled');
      const data = Buffer.concat(bufs.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
      queuedWrite(tf.model, tf.target, pos, data, () => fs.writevSync(fd, bufs, pos), (err, n) => cb(err, n, bufs));
    }) as typeof fs.writev;

    // The volume data path's form (volume.ts pwrite/writeAll): fs.write(fd, buffer, offset, length, position, cb).
    fs.write = ((fd: number, buffer: NodeJS.ArrayBufferView, ...rest: unknown[]) => {
      if (dead(fd)) return;
      const tf = this.fds.get(fd);
      if (!tf) return (real.write as (...a: unknown[]) => void)(fd, buffer, ...rest);
      const [offset, length, pos, cb] = rest as [number, number, number, (err: NodeJS.ErrnoException | null, n: number, b: NodeJS.ArrayBufferView) => void];
      if (typeof tf.target !== 'number' || !Buffer.isBuffer(buffer) || typeof offset !== 'number' || typeof length !== 'number' || typeof pos !== 'number' || typeof cb !== 'function') {
        throw new Error('power-loss fs: only write(fd, buffer, offset, length, position, cb) on a file is modelled');
      }
      const data = Buffer.from(buffer.subarray(offset, offset + length));
      queuedWrite(tf.model, tf.target, pos, data, () => real.writeSync(fd, buffer, offset, length, pos), (err, n) => cb(err, n, buffer));
    }) as typeof fs.write;

    const queuedSync = (realFn: typeof fs.fdatasync) =>
      ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
        if (dead(fd)) return;
        const tf = this.fds.get(fd);
        if (!tf) return realFn(fd, cb);
        const b = barrier(tf);
        enqueue(() => {
          b.complete = this.tick();
          cb(null);
        });
      }) as typeof fs.fdatasync;
    fs.fdatasync = queuedSync(real.fdatasync);
    fs.fsync = queuedSync(real.fsync);

    const syncSync = (realFn: typeof fs.fdatasyncSync) =>
      ((fd: number) => {
        if (dead(fd)) return;
        const tf = this.fds.get(fd);
        if (!tf) return realFn(fd);
        const b = barrier(tf);
        b.complete = this.tick();
      }) as typeof fs.fdatasyncSync;
    fs.fdatasyncSync = syncSync(real.fdatasyncSync);
    fs.fsyncSync = syncSync(real.fsyncSync);

    fs.ftruncateSync = ((fd: number, len?: number) => {
      if (dead(fd)) return;
      const tf = this.fds.get(fd);
      real.ftruncateSync(fd, len);
      if (!tf) return;
      if (typeof tf.target !== 'number') throw new Error('power-loss fs: ftruncate of a directory');
      const at = this.tick();
      tf.model.ops.push({ k: 'trunc', ino: tf.target, lengthBytes: len ?? 0, issue: at, complete: at });
    }) as typeof fs.ftruncateSync;

    // A RELEASE's truncate (volume.ts releaseFile): fs.ftruncate(fd, len, cb), queued like a write.
    fs.ftruncate = ((fd: number, len: number | ((err: NodeJS.ErrnoException | null) => void), cb?: (err: NodeJS.ErrnoException | null) => void) => {
      if (dead(fd)) return;
      const callback = typeof len === 'function' ? len : cb!;
      const lengthBytes = typeof len === 'number' ? len : 0;
      const tf = this.fds.get(fd);
      if (!tf) return real.ftruncate(fd, lengthBytes, callback);
      if (typeof tf.target !== 'number') throw new Error('power-loss fs: ftruncate of a directory');
      const op: Op = { k: 'trunc', ino: tf.target, lengthBytes, issue: this.tick() };
      tf.model.ops.push(op);
      let err: NodeJS.ErrnoException | null = null;
      const effect = () => {
        try {
          real.ftruncateSync(fd, lengthBytes);
        } catch (e) {
          err = e as NodeJS.ErrnoException;
        }
        op.complete = this.tick();
      };
      enqueue(() => {
        effect();
        callback(err);
      }, effect);
    }) as typeof fs.ftruncate;

    fs.rm = ((p: fs.PathLike, opts: fs.RmOptions | ((err: NodeJS.ErrnoException | null) => void), cb?: (err: NodeJS.ErrnoException | null) => void) => {
      const callback = typeof opts === 'function' ? opts : cb!;
      const options = typeof opts === 'function' ? {} : opts;
      const abs = path.resolve(String(p));
      const m = this.modelOfFile(abs);
      if (!m) return real.rm(p, options, callback);
      const name = path.basename(abs);
      const ino = m.current.get(name);
      const op: Op | null = ino === undefined ? null : { k: 'unlink', name, ino, issue: this.tick() };
      if (op) m.ops.push(op);
      let err: NodeJS.ErrnoException | null = null;
      const effect = () => {
        try {
          // Not fs.rmSync: it unlinks through fs.unlinkSync, which would log the unlink twice.
          try {
            real.unlinkSync(abs);
          } catch (e) {
            if (!(options.force && (e as NodeJS.ErrnoException).code === 'ENOENT')) throw e;
          }
          if (m.current.get(name) === ino) m.current.delete(name);
        } catch (e) {
          err = e as NodeJS.ErrnoException;
        }
        if (op) op.complete = this.tick();
      };
      enqueue(() => {
        effect();
        callback(err);
      }, effect);
    }) as typeof fs.rm;

    // fs.promises.rm (a volume RELEASE's delete) on a tracked file: fs.rm's model, as a promise.
    fs.promises.rm = ((p: fs.PathLike, opts?: fs.RmOptions) => {
      if (!this.modelOfFile(path.resolve(String(p)))) return real.promisesRm(p, opts);
      return new Promise<void>((resolve, reject) => fs.rm(p, opts ?? {}, (err) => (err ? reject(err) : resolve())));
    }) as typeof fs.promises.rm;

    fs.unlinkSync = ((p: fs.PathLike) => {
      real.unlinkSync(p);
      const abs = path.resolve(String(p));
      const m = this.modelOfFile(abs);
      const name = path.basename(abs);
      const ino = m?.current.get(name);
      if (!m || ino === undefined) return;
      m.current.delete(name);
      const at = this.tick();
      m.ops.push({ k: 'unlink', name, ino, issue: at, complete: at });
    }) as typeof fs.unlinkSync;

    fs.renameSync = ((from: fs.PathLike, to: fs.PathLike) => {
      real.renameSync(from, to);
      const a = path.resolve(String(from));
      const b = path.resolve(String(to));
      const m = this.modelOfFile(a);
      if (!m) return;
      if (this.modelOfFile(b) !== m) throw new Error('power-loss fs: rename across directories is not modelled');
      const ino = m.current.get(path.basename(a));
      if (ino === undefined) return;
      m.current.delete(path.basename(a));
      m.current.set(path.basename(b), ino);
      const at = this.tick();
      m.ops.push({ k: 'rename', from: path.basename(a), to: path.basename(b), ino, issue: at, complete: at });
    }) as typeof fs.renameSync;

    // A FileHandle of a tracked file as fs.promises.open returns it, for the calls writeHotSegment
    // makes: writev at the handle's position (or a given one), datasync/sync, close; fd for fstat.
    const never = () => new Promise<never>(() => undefined);
    const queuedFileHandle = (fd: number): QueuedFileHandle => {
      let positionBytes = 0;
      return {
        fd,
        writev: (bufs: NodeJS.ArrayBufferView[], position?: number | null) => {
          if (dead(fd)) return never();
          const tf = this.fds.get(fd);
          if (!tf || typeof tf.target !== 'number') throw new Error('power-loss fs: writev on a handle the model does not know');
          const data = Buffer.concat(bufs.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
          const pos = typeof position === 'number' ? position : positionBytes;
          if (typeof position !== 'number') positionBytes += data.length;
          return new Promise((res, rej) => queuedWrite(tf.model, tf.target as number, pos, data, () => fs.writevSync(fd, bufs, pos), (err, n) => (err ? rej(err) : res({ bytesWritten: n, buffers: bufs }))));
        },
        datasync: () => handleSync(fd),
        sync: () => handleSync(fd),
        close: () => {
          if (dead(fd)) return never();
          return new Promise<void>((res, rej) => fs.close(fd, (err) => (err ? rej(err) : res())));
        },
      };
    };
    const handleSync = (fd: number): Promise<void> => {
      if (dead(fd)) return never();
      return new Promise<void>((res) => fs.fdatasync(fd, () => res()));
    };

    fs.promises.open = ((p: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
      const m = this.modelOfDir(String(p));
      if (!m) {
        // A file in a tracked directory opened to write (hot-segments.ts writeHotSegment: 'wx',
        // then writev, datasync, close): a queued handle whose calls are logged like the
        // callback API's. Opened to read: the real handle (reads are not modelled).
        const { creates, truncates } = openFlags(flags);
        const writes = creates || truncates || (typeof flags === 'string' && flags.includes('+')) || (typeof flags === 'number' && (flags & (fs.constants.O_WRONLY | fs.constants.O_RDWR)) !== 0);
        if (!writes || !this.modelOfFile(path.resolve(String(p)))) return real.promisesOpen(p, flags, mode);
        return new Promise<QueuedFileHandle>((resolve, reject) =>
          enqueue(() => {
            let fd: number;
            try {
              fd = fs.openSync(p, flags ?? 'r', mode);
            } catch (e) {
              return reject(e as Error);
            }
            resolve(queuedFileHandle(fd));
          }),
        );
      }
      return new Promise<QueuedDirHandle>((resolve, reject) =>
        enqueue(() => {
          let fd: number;
          try {
            fd = fs.openSync(p, 'r');
          } catch (e) {
            return reject(e as Error);
          }
          resolve({
            fd,
            sync: () =>
              new Promise<void>((res) => {
                const b = barrier(this.fds.get(fd)!);
                enqueue(() => {
                  b.complete = this.tick();
                  res();
                });
              }),
            close: () =>
              new Promise<void>((res) =>
                enqueue(() => {
                  fs.closeSync(fd);
                  res();
                }),
              ),
          });
        }),
      );
    }) as unknown as typeof fs.promises.open;
  }
}

/** Lets every promise reaction queued so far run (no real I/O is pending on tracked descriptors). */
function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

function openFlags(flags: fs.OpenMode | undefined): { creates: boolean; truncates: boolean } {
  if (typeof flags === 'number') return { creates: (flags & fs.constants.O_CREAT) !== 0, truncates: (flags & fs.constants.O_TRUNC) !== 0 };
  const f = flags ?? 'r';
  return { creates: /[wa]/.test(f), truncates: f.startsWith('w') };
}
