// Moves journaled writes of cold volumes into new stripe generations: on an
// interval, and early when the journal passes its threshold.
import { log } from '../../log.js';
import type { Journal } from './journal.js';
import type { Volume } from '../volumes/volume.js';

export interface DestagerOptions {
  intervalMs: number;
  /** Start destaging early once live journal bytes pass this share of its capacity. */
  thresholdPercent: number;
  /** Chunks destaged at once (each one encodes a stripe and writes k+m shards). */
  concurrency: number;
}

export class Destager {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  stripesDestaged = 0;
  errors = 0;
  private lastError: string | null = null;

  constructor(
    private readonly journal: Journal,
    private readonly volumeById: (id: number) => Volume | null,
    private readonly opts: DestagerOptions,
  ) {
    journal.onPressure = () => {
      if (journal.bytesLive >= (journal.capacityBytes * opts.thresholdPercent) / 100) this.kick();
    };
  }

  start(): void {
    this.timer = setInterval(() => this.kick(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** Starts a pass (or schedules one more after the current pass). */
  kick(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.pass().finally(() => {
      this.running = null;
      if (this.again && !this.stopped) {
        this.again = false;
        void this.kick();
      }
    });
    return this.running;
  }

  /**
   * Destages until the journal holds nothing (used by `couchestor destage`
   * and tests). Throws when a whole pass makes no progress.
   */
  async drain(): Promise<void> {
    while (this.journal.dirtyVolumes().length > 0) {
      if (this.running) await this.running;
      const before = this.stripesDestaged;
      this.lastError = null;
      await this.kick();
      if (this.stripesDestaged === before && this.journal.dirtyVolumes().length > 0) {
        throw new Error(`destage made no progress: ${this.lastError ?? 'nothing destageable'}`);
      }
    }
  }

  private async pass(): Promise<void> {
    const work: [Volume, number][] = [];
    for (const id of this.journal.dirtyVolumes()) {
      const vol = this.volumeById(id);
      if (!vol) continue;
      for (const c of this.journal.dirtyChunks(id)) work.push([vol, c]);
    }
    let next = 0;
    const worker = async () => {
      while (next < work.length && !this.stopped) {
        const [vol, c] = work[next++]!;
        try {
          if (await vol.drainJournalChunk(c)) this.stripesDestaged++;
        } catch (err) {
          this.errors++;
          this.lastError = (err as Error).message;
          this.journal.stalledReason = this.lastError;
          // The journal keeps the data; the next pass retries.
          log.warn('destage failed; will retry', { volume: vol.name, chunk: c, err: (err as Error).message });
        }
      }
    };
    await Promise.all(Array.from({ length: this.opts.concurrency }, worker));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.running) await this.running;
  }
}
