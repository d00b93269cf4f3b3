// MD5 of large upload bodies (the S3 ETag) on a worker thread instead of the
// event loop. Hashing a 4 MiB body costs ~7 ms of event-loop time, about a
// third of a single-stream PUT; on the worker it overlaps with receiving.
// The body is copied into 1 MiB batches whose buffers travel to the worker
// and back by transfer, so the steady state allocates nothing.
import { Worker } from 'node:worker_threads';
import type { FromWorker, ToWorker } from './md5-worker.js';

const BATCH_BYTES = 1024 * 1024;
/** Batches of one stream on their way to or inside the worker; `update` waits beyond this (backpressure). */
const MAX_IN_FLIGHT_PER_STREAM = 4;
/** Returned batch buffers kept for reuse: 16 MiB. */
const MAX_FREE_BATCHES = 16;

export class Md5WorkerFailed extends Error {
  override name = 'Md5WorkerFailed';
}

interface StreamState {
  inFlight: number;
  /** Woken when a batch of this stream comes back. */
  wake: (() => void) | undefined;
  done: ((digest: Buffer) => void) | undefined;
  fail: ((err: Error) => void) | undefined;
}

let worker: Worker | undefined;
let nextId = 1;
const streams = new Map<number, StreamState>();
const freeBatches: ArrayBuffer[] = [];

function getWorker(): Worker {
  if (worker) return worker;
  const w = new Worker(new URL('./md5-worker.js', import.meta.url));
  w.on('message', (m: FromWorker) => {
    const s = streams.get(m.id);
    if (m.op === 'ack') {
      if (freeBatches.length < MAX_FREE_BATCHES) freeBatches.push(m.buf);
      if (!s) return;
      s.inFlight--;
      const wake = s.wake;
      s.wake = undefined;
      wake?.();
    } else {
      untrack(m.id);
      s?.done?.(Buffer.from(m.digest));
    }
  });
  const failAll = (err: Error) => {
    if (worker === w) worker = undefined;
    for (const [id, s] of streams) {
      untrack(id);
      const e = new Md5WorkerFailed(`MD5 worker failed: ${err.message}`);
      s.fail?.(e);
      s.wake?.();
    }
  };
  w.on('error', failAll);
  w.on('exit', (code) => failAll(new Error(`exited with code ${code}`)));
  // Idle, it must not keep the process alive; streams in flight ref it
  // (see track/untrack). After the listeners: adding one refs it again.
  w.unref();
  worker = w;
  return w;
}

function track(id: number, s: StreamState, w: Worker): void {
  if (streams.size === 0) w.ref();
  streams.set(id, s);
}

function untrack(id: number): boolean {
  const had = streams.delete(id);
  if (had && streams.size === 0) worker?.unref();
  return had;
}

/** One upload's MD5, computed on the worker. Call `digest` or `drop` exactly once. */
export class OffloadedMd5 {
  private readonly id = nextId++;
  private readonly state: StreamState = { inFlight: 0, wake: undefined, done: undefined, fail: undefined };
  private readonly worker: Worker;
  private batch: Buffer | undefined;
  private fill = 0;
  private failed: Error | undefined;

  constructor() {
    this.worker = getWorker();
    track(this.id, this.state, this.worker);
    this.state.fail = (err) => (this.failed = err);
  }

  /** Copies `piece` in; resolves later only when the worker is behind (then the caller should wait). */
  update(piece: Buffer): Promise<void> | undefined {
    if (this.failed) throw this.failed;
    let at = 0;
    while (at < piece.length) {
      if (!this.batch) this.batch = Buffer.from(freeBatches.pop() ?? new ArrayBuffer(BATCH_BYTES));
      const n = piece.copy(this.batch, this.fill, at);
      at += n;
      this.fill += n;
      if (this.fill === BATCH_BYTES) this.send();
    }
    if (this.state.inFlight < MAX_IN_FLIGHT_PER_STREAM) return undefined;
    return new Promise<void>((resolve) => (this.state.wake = resolve)).then(() => {
      if (this.failed) throw this.failed;
    });
  }

  private send(): void {
    const buf = this.batch!.buffer as ArrayBuffer;
    this.state.inFlight++;
    this.worker.postMessage({ op: 'data', id: this.id, buf, lengthBytes: this.fill } satisfies ToWorker, [buf]);
    this.batch = undefined;
    this.fill = 0;
  }

  /** The 16-byte MD5 of everything passed to `update`. */
  digest(): Promise<Buffer> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.fill > 0) this.send();
    return new Promise<Buffer>((resolve, reject) => {
      this.state.done = resolve;
      this.state.fail = reject;
      this.worker.postMessage({ op: 'end', id: this.id } satisfies ToWorker);
    });
  }

  /** The upload failed: forget the stream (on the worker too). */
  drop(): void {
    if (!untrack(this.id)) return;
    if (this.batch && freeBatches.length < MAX_FREE_BATCHES) freeBatches.push(this.batch.buffer as ArrayBuffer);
    this.batch = undefined;
    this.worker.postMessage({ op: 'drop', id: this.id } satisfies ToWorker);
  }
}
