// The daemon-wide bound on bytes held by in-flight NBD requests (WRITE
// payloads, READ data, CACHE steps, the work TRIM/WRITE_ZEROES queue), shared
// by every connection: past it a connection stops reading its socket until
// bytes come back, first come first served.

/** Default `limits.inflightBytes`: 512 MiB across all connections (each may hold 128 MiB by itself). */
export const DEFAULT_INFLIGHT_BUDGET_BYTES = 512 * 1024 * 1024;

/** One who waits for bytes: granted() runs once they are its (counted in use). */
export interface BudgetWaiter {
  readonly budgetWaitBytes: number;
  budgetGranted(): void;
}

export class InflightBudget {
  private used = 0;
  private peak = 0;
  private pauses = 0;
  /** FIFO; at most one entry per connection (a connection waits for one request at a time). */
  private readonly waiting: BudgetWaiter[] = [];
  private granting = false;

  constructor(private capacity: number) {
    assertBytes(capacity);
  }

  /** Set at daemon start from the configuration; waiters that now fit are let in. */
  setCapacity(capacityBytes: number): void {
    assertBytes(capacityBytes);
    this.capacity = capacityBytes;
    this.grant();
  }

  get capacityBytes(): number {
    return this.capacity;
  }
  get usedBytes(): number {
    return this.used;
  }
  /** The most ever in use at once: at most capacity, or one request when it alone is larger. */
  get peakBytes(): number {
    return this.peak;
  }
  /** Times a request had to wait for the budget (its connection stopped reading). */
  get pausesTotal(): number {
    return this.pauses;
  }
  get waiters(): number {
    return this.waiting.length;
  }

  /**
   * Takes `bytes` now (true) or queues `w` behind earlier waiters (false;
   * w.budgetGranted() runs once they are taken). A request is always let in
   * when nothing is in use, whatever its size, so one larger than the whole
   * budget runs alone instead of never. Nobody jumps the queue: a small
   * request behind a large waiter waits too.
   */
  acquire(bytes: number, w: BudgetWaiter): boolean {
    if (this.waiting.length === 0 && this.fits(bytes)) {
      this.take(bytes);
      return true;
    }
    this.pauses++;
    this.waiting.push(w);
    return false;
  }

  /** Gives back bytes acquire took (or a grant gave); waiters that now fit are let in. */
  release(bytes: number): void {
    if (bytes === 0) return;
    this.used -= bytes;
    if (this.used < 0) throw new Error(`inflight budget released ${-this.used} bytes more than taken`);
    this.grant();
  }

  /** Removes a waiter that no longer wants the bytes (its connection closed); nothing was taken for it. */
  cancel(w: BudgetWaiter): void {
    const i = this.waiting.indexOf(w);
    if (i < 0) return;
    this.waiting.splice(i, 1);
    // It may have been the head that held the others back.
    if (i === 0) this.grant();
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.capacity;
  }

  private take(bytes: number): void {
    this.used += bytes;
    if (this.used > this.peak) this.peak = this.used;
  }

  /** Lets waiters in, in order, while the head fits. A grant whose callback releases (a fast-path completion) re-enters: the outer loop carries on. */
  private grant(): void {
    if (this.granting) return;
    this.granting = true;
    try {
      while (this.waiting.length > 0 && this.fits(this.waiting[0]!.budgetWaitBytes)) {
        const w = this.waiting.shift()!;
        this.take(w.budgetWaitBytes);
        w.budgetGranted();
      }
    } finally {
      this.granting = false;
    }
  }
}

function assertBytes(n: number): void {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`inflight budget must be a positive whole number of bytes, got ${n}`);
}

/** The daemon's one budget (capacity set from `limits.inflightBytes` at start). */
export const inflightBudget = new InflightBudget(DEFAULT_INFLIGHT_BUDGET_BYTES);
