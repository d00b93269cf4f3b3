// Recycled buffers for large NBD payloads (write data, read replies).
// Allocating a fresh ArrayBuffer per 1 MiB request makes V8 run a full
// mark-compact every few dozen MiB of I/O ("external memory pressure"),
// which stalls every connection; reusing them keeps the hot path GC-free.

/**
 * Payloads smaller than this come from Node's own small-buffer pool (which
 * serves only requests < 4 KiB; a 4 KiB WRITE would otherwise cost a fresh
 * ArrayBuffer each time).
 */
export const MIN_POOLED_BYTES = 4 * 1024;
/** Bound on idle bytes kept for reuse across all connections. */
export const MAX_IDLE_POOL_BYTES = 64 * 1024 * 1024;

export class BufferPool {
  /** Idle buffers by capacity (a power of two). */
  private readonly idle = new Map<number, Buffer[]>();
  private idleBytes = 0;
  /** Backing stores this pool allocated: only those are ever recycled. */
  private readonly owned = new WeakSet<ArrayBufferLike>();

  constructor(private readonly maxIdleBytes = MAX_IDLE_POOL_BYTES) {}

  /** A buffer of exactly `lengthBytes` (uninitialised), pooled when large enough. */
  get(lengthBytes: number): Buffer {
    if (lengthBytes < MIN_POOLED_BYTES) return Buffer.allocUnsafe(lengthBytes);
    const capacity = capacityFor(lengthBytes);
    const buf = this.idle.get(capacity)?.pop();
    if (buf) {
      this.idleBytes -= capacity;
      return buf.subarray(0, lengthBytes);
    }
    const fresh = Buffer.allocUnsafeSlow(capacity);
    this.owned.add(fresh.buffer);
    return fresh.subarray(0, lengthBytes);
  }

  /**
   * Takes back a buffer from `get` once nothing references it any more (the
   * caller's promise). Buffers the pool did not allocate are ignored.
   */
  release(buf: Buffer): void {
    if (!this.owned.has(buf.buffer)) return;
    const capacity = buf.buffer.byteLength;
    if (this.idleBytes + capacity > this.maxIdleBytes) return;
    let list = this.idle.get(capacity);
    if (!list) this.idle.set(capacity, (list = []));
    list.push(Buffer.from(buf.buffer, 0, capacity));
    this.idleBytes += capacity;
  }

  get idleByteCount(): number {
    return this.idleBytes;
  }
}

function capacityFor(lengthBytes: number): number {
  return 2 ** Math.ceil(Math.log2(lengthBytes));
}

/** Shared by all connections of the process (single-threaded, so no locking). */
export const payloadPool = new BufferPool();
