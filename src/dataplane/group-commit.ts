// Group commit: callers that ask for durability while a sync runs share the
// next one, so N concurrent FLUSH/FUA requests cost at most two syncs.

export class GroupCommit {
  private inFlight: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  /** `sync` must make durable everything completed before it was called. */
  constructor(private readonly sync: () => Promise<void>) {}

  /** Resolves once everything completed before this call is durable. */
  run(): Promise<void> {
    if (this.queued) return this.queued;
    if (this.inFlight) {
      this.queued = this.inFlight.then(
        () => this.start(),
        () => this.start(),
      );
      return this.queued;
    }
    return this.start();
  }

  private start(): Promise<void> {
    this.queued = null;
    const p = this.sync();
    const tracked = p.then(
      () => {
        if (this.inFlight === tracked) this.inFlight = null;
      },
      () => {
        if (this.inFlight === tracked) this.inFlight = null;
      },
    );
    this.inFlight = tracked;
    return p;
  }
}
