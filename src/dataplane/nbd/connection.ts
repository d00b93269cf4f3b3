// One NBD client connection: the whole protocol state machine (fixed
// newstyle handshake, option haggling, transmission) lives here. Storage is
// reached only through Volume; protocol bytes never leave this file.
import fs from 'node:fs';
import type { Socket } from 'node:net';
import { NotFound } from '../errors.js';
import type { Volume } from '../volumes/volume.js';
import { inflightBudget, type BudgetWaiter } from '../inflight-budget.js';
import { payloadPool } from './buffer-pool.js';
import { ExportUnavailable, nbdErrno, unavailableReason } from './errors.js';
import * as P from './protocol.js';
import { log } from '../../log.js';

export interface ExportResolver {
  /**
   * Opens the export and lends its volume to the connection until release();
   * throws NotFound for an unknown name. `failedOpen`: the failure of the
   * open prepare() waited on, answered as the open's (not opened again).
   */
  resolve(name: string, failedOpen?: unknown): Volume;
  /**
   * Settles once the export's volume is open, when it is not yet (its
   * chunk map is read a slice at a time, the event loop free between two);
   * null when resolve() would not wait. The option naming it is answered
   * after that, no further input read meanwhile. Resolves with a loan of
   * the volume (given back with release() once the option is answered:
   * an option refused by its own checks takes none); rejects with the
   * open's failure (handed to resolve()).
   */
  prepare?(name: string): Promise<Volume> | null;
  /** Ends a loan resolve() made (the last one closes the volume when nothing else holds it). */
  release(vol: Volume): void;
  list(): { name: string; description: string }[];
  description(name: string): string;
}

/** Where a connection stands with the daemon-wide inflightBudget (see admitBudget). */
const enum Budget {
  /** Not waiting. */
  None,
  /** Queued: the socket is not read until granted. */
  Queued,
  /** Granted (the bytes are counted), the request not yet resumed (afterBudgetGrant runs next). */
  Granted,
}

const enum Phase {
  ClientFlags,
  OptionHeader,
  OptionData,
  OptionDiscard,
  RequestHeader,
  WritePayload,
  WriteDiscard,
  Closed,
}

/**
 * Bounds on work a single client can queue before we stop reading its socket.
 * Across all clients, inflightBudget (limits.inflightBytes) bounds the bytes.
 */
const MAX_INFLIGHT_REQUESTS = 128;
const MAX_INFLIGHT_BYTES = 128 * 1024 * 1024;
/**
 * A client in the option phase that sends no complete option for this long is
 * dropped (it holds one of MAX_CONNECTIONS). Counted from the last option, not
 * from connect: `nbdinfo --list` haggles on one connection, ~4 options per
 * export, and libnbd's small writes over TCP wait out the peer's delayed ACK
 * (~200 ms each for NBD_OPT_LIST_META_CONTEXT, against nbdkit too), so a
 * deadline from connect cut the listing of more than ~140 exports.
 */
const HANDSHAKE_TIMEOUT_MS = 30_000;
/**
 * A WRITE payload that receives no byte for this long (checked every this
 * long: cut after one to two periods) drops its client: the payload's bytes
 * are counted in the daemon-wide budget from its header on, and a client that
 * sent headers and then stalled (a 32 MiB one each) held them for good, every
 * other client waiting. Any size: 16 clients each stalled in a 64 KiB - 1
 * payload held a 1 MiB budget (the least limits.inflightBytes) for good, and
 * 1,024 (MAX_CONNECTIONS) one under 64 MiB. Watched only once a payload is
 * left incomplete by the input at hand (a 4 KiB WRITE arriving whole with its
 * header costs no timer work). COUCHESTOR_NBD_PAYLOAD_STALL_MS overrides it (tests).
 */
const PAYLOAD_STALL_MS = Number(process.env.COUCHESTOR_NBD_PAYLOAD_STALL_MS ?? 30_000);
/**
 * Replies queued in the socket beyond this mean the client is not reading:
 * stop reading its requests until they drain. (Any single large read reply
 * exceeds the stream's highWaterMark, so that is not the signal to use.)
 */
const MAX_UNSENT_REPLY_BYTES = 64 * 1024 * 1024;
/**
 * What a CACHE reads at a time, and counts against MAX_INFLIGHT_BYTES for
 * as long as it runs (seconds for a few GiB, more for cold data): 32 MiB
 * each, two long CACHEs and a burst of READs held the connection's reading
 * until a CACHE ended (review-nbd-big-cache-long). A 1 MiB chunk or stripe.
 */
const CACHE_STEP_BYTES = 1024 * 1024;

/**
 * Idle fast path: a READ or (non-FUA) WRITE of at most SYNC_MAX_BYTES on a
 * hot/warm volume runs with fs.readSync/writeSync on the event loop when it
 * is the only NBD request in flight in the whole daemon (none other on this
 * connection, none on any other). Everything else keeps the threadpool path.
 * Why: at queue depth 1 the async path costs two thread handoffs per request
 * (event loop -> threadpool -> event loop) where nbdkit wakes one thread; on
 * this 2-core box (load 10-15) that made randread 4k QD1 2.7-6.2k IOPS and
 * randwrite 2.4-3.4k, against 9.0-9.6k and 3.5-9.8k with the sync prototype.
 * Blocking the loop is safe only while nothing else could be served in the
 * meantime, hence "daemon-wide idle"; hot pools are NVMe by design, so a
 * page-cache miss blocks ~100 us, the order of a GC pause. FUA, FLUSH and
 * cold/journaled ranges stay async (durability goes through group commit).
 */
const SYNC_MAX_BYTES = 64 * 1024;
/** NBD requests in flight across every connection of the process. */
let daemonInflight = 0;

/**
 * QD1 busy-poll window after a direct reply (see NbdConnection.pollForNext);
 * COUCHESTOR_NBD_POLL_US overrides it, 0 turns polling off.
 */
const POLL_AFTER_REPLY_NS = BigInt(Math.round(Number(process.env.COUCHESTOR_NBD_POLL_US ?? 50) * 1000));
/** Requests one poll loop may serve before the event loop gets its turn. */
const POLL_MAX_REQUESTS = 16;
/** Socket reads made by the poll land here (consume copies what it keeps). */
const pollBuffer = Buffer.allocUnsafeSlow(64 * 1024);
/** Bound on reads of leftover input before a disconnect's close (see closeAfterFinish). */
const MAX_DRAIN_READS = 64;
/**
 * Input queued while an option waits for its export's volume to open (afterOpen), at most (reads stop at it, see
 * nextReadBuffer; give or take one read on the 'data' fallback): at it the socket is not read until the open ends.
 * Read and not paused outright, so that a client that hangs up meanwhile is seen at once (its socket closes, a
 * delete no longer counts it), not when the open ends (seconds for a map of 300k entries); bounded, as an unread
 * socket was, against a client that sends on (review-volume-open-flood, nbd-opening-input-bound).
 */
// Not less than the largest option's data: the handshake's reads stop at it (handshakeReadBuffer), so one must fit.
const OPENING_MAX_QUEUED_BYTES = P.MAX_OPTION_BYTES;

/**
 * Where a read in the handshake lands (nextReadBuffer; the server's first read, chosen before the connection
 * exists): no further than OPENING_MAX_QUEUED_BYTES queued. The read that brings an option which then waits on its
 * open may bring what the client sent after it: a whole shared read (256 KiB) held up to 4x the bound (~220 KiB
 * per connection over the Unix socket).
 */
export function handshakeReadBuffer(shared: Buffer, queuedBytes = 0): Buffer {
  return shared.subarray(0, Math.max(1, OPENING_MAX_QUEUED_BYTES - queuedBytes));
}

/**
 * What a TRIM or WRITE_ZEROES weighs against MAX_INFLIGHT_BYTES per chunk it
 * touches. They hold no buffer, but queue one piece of work per chunk (on a
 * cold volume a journal record each, ~3-4 KB of memory until it lands):
 * counted as nothing, 128 whole-device zeroes of a 4 GiB cold volume in
 * flight took the daemon from 100 MB to 1.8 GB (test
 * review-nbd-zero-memory). At 4 KiB a chunk, 8 such zeroes are in flight.
 */
const RANGE_COST_PER_CHUNK = 4096;

function rangeCost(vol: Volume, offset: number, length: number): number {
  const cs = vol.rec.chunkSizeBytes;
  return (Math.floor((offset + length - 1) / cs) - Math.floor(offset / cs) + 1) * RANGE_COST_PER_CHUNK;
}

/** WRITE payload remainders at least this large are received in place (nextReadBuffer). */
const DIRECT_READ_MIN_BYTES = 64 * 1024;
/** Reads at or above this size go out as header + pooled data buffer (two iovecs). */
const POOLED_READ_BYTES = 128 * 1024;

const ALLOWED_FLAGS: Record<number, number> = {
  [P.CMD_READ]: P.CMD_FLAG_DF | P.CMD_FLAG_FUA,
  [P.CMD_WRITE]: P.CMD_FLAG_FUA,
  [P.CMD_DISC]: 0,
  [P.CMD_FLUSH]: P.CMD_FLAG_FUA,
  [P.CMD_TRIM]: P.CMD_FLAG_FUA,
  [P.CMD_CACHE]: P.CMD_FLAG_FUA,
  [P.CMD_WRITE_ZEROES]: P.CMD_FLAG_FUA | P.CMD_FLAG_NO_HOLE | P.CMD_FLAG_FAST_ZERO,
  [P.CMD_BLOCK_STATUS]: P.CMD_FLAG_REQ_ONE | P.CMD_FLAG_FUA,
};

export class NbdConnection implements BudgetWaiter {
  private phase = Phase.ClientFlags;
  private readonly chunks: Buffer[] = [];
  private queuedBytes = 0;
  private need = 4;
  private noZeroes = false;
  private structured = false;
  private metaAllocation = false;
  private volume: Volume | null = null;
  /**
   * The volume this connection holds a loan of (ExportResolver.resolve), at
   * most one: the export an option named last (NBD_OPT_INFO, GO,
   * EXPORT_NAME, a meta-context query), then the transmission's. Given back
   * once the socket has closed and nothing is in flight (releaseVolume),
   * however the connection ended: before, every export a client ever
   * opened stayed open (a descriptor and a chunk map each) until the daemon stopped.
   */
  private lent: Volume | null = null;
  private socketClosed = false;
  private exportFlags = 0;
  // Current option / request being parsed.
  private optCode = 0;
  private reqFlags = 0;
  private reqType = 0;
  private reqCookie = Buffer.alloc(8);
  /** WRITE payload being gathered (Phase.WritePayload); filled as bytes arrive. */
  private payload: Buffer | null = null;
  private payloadFilled = 0;
  /** Set while a socket read is being parsed: replies it causes leave in one write. */
  private inInputBatch = false;
  /** Replies produced so far while parsing the current socket read. */
  private batchReplies = 0;
  /** The first of them, held back in case it is the only one (see flushHeldReply). */
  private heldReply: Buffer | null = null;
  private heldReplySent: (() => void) | undefined = undefined;
  /** The last socket read caused exactly one reply and it went straight to the socket (see pollForNext). */
  private lastReplyDirect = false;
  private polling = false;
  /** The part of `payload` handed out as the next socket read target (see nextReadBuffer). */
  private directTarget: Buffer | null = null;
  /**
   * Set when the last request was a WRITE received in place: the next socket
   * read takes exactly one request header (see nextReadBuffer).
   */
  private headerOnlyRead = false;
  private readonly headerTarget = Buffer.allocUnsafeSlow(P.REQUEST_HEADER_BYTES);
  private reqOffset = 0;
  private reqLength = 0;
  private discardLeft = 0;
  private inflight = 0;
  private inflightBytes = 0;
  /**
   * Not reading new requests for this connection's own reasons: its cap
   * (MAX_INFLIGHT_*) or a client not reading replies. A WRITE payload
   * already admitted is still received meanwhile (see syncReading).
   */
  private paused = false;
  /** Waiting for the daemon-wide budget (a reason of its own, not `paused`): for the request parsed last, of budgetWaitBytes. */
  private budget = Budget.None;
  budgetWaitBytes = 0;
  private readonly afterGrant = (): void => this.afterBudgetGrant();
  /** See PAYLOAD_STALL_MS: made at the first watched payload, refreshed at each. */
  private payloadWatch: NodeJS.Timeout | null = null;
  /** The payload being received is watched (it was left incomplete once). */
  private payloadWatched = false;
  /** payloadFilled when the watch last looked. */
  private payloadWatchFilled = 0;
  /** An option waits for its export's volume to open (ExportResolver.prepare): no input is parsed meanwhile. */
  private opening = false;
  /** The export name (as the client sent it) of the option waiting on its open, while `opening`. */
  private openingExport: string | null = null;
  /** The failure of the open the option being answered waited on (afterOpen), for its lookup; undefined otherwise. */
  private preparedFailure: unknown = undefined;
  private disconnecting = false;
  private handshakeTimer: NodeJS.Timeout | null;
  /** Resolves when the socket has closed (see shutdown). */
  readonly closed: Promise<void>;
  private resolveClosed: () => void = () => undefined;
  /** Replies written during one event-loop turn leave in one writev (see send). */
  private replyBatchOpen = false;
  private readonly closeReplyBatch = (): void => {
    this.replyBatchOpen = false;
    this.socket.uncork();
  };

  constructor(
    private readonly socket: Socket,
    private readonly exports: ExportResolver,
    private readonly onClose: () => void,
    /** The server feeds socket bytes through onSocketRead (its own read buffer) instead of 'data' events. */
    ownReadBuffer = false,
  ) {
    socket.setNoDelay?.(true);
    if (!ownReadBuffer) socket.on('data', (d: Buffer) => this.onSocketRead(d, false));
    socket.on('error', (err) => log.debug('nbd: socket error', { err: err.message }));
    this.closed = new Promise((r) => (this.resolveClosed = r));
    socket.on('close', () => {
      this.resolveClosed();
      this.phase = Phase.Closed;
      this.socketClosed = true;
      if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
      if (this.payloadWatch) clearTimeout(this.payloadWatch);
      this.dropBudget();
      this.onClose();
      this.releaseVolume();
    });
    socket.on('drain', () => this.maybeResume());
    this.handshakeTimer = this.handshakeDeadline();
    const hello = Buffer.alloc(18);
    hello.writeBigUInt64BE(P.NBDMAGIC, 0);
    hello.writeBigUInt64BE(P.IHAVEOPT, 8);
    hello.writeUInt16BE(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES, 16);
    socket.write(hello);
  }

  /**
   * Daemon shutdown. proto.md: the server SHOULD let in-flight requests be
   * served before it disconnects. So: no further request is read, those in
   * flight complete and send their replies, then the connection is closed
   * (as after NBD_CMD_DISC). A client still haggling is dropped at once.
   * The caller bounds the wait (NbdServer.close).
   */
  shutdown(reason = 'server shutting down'): Promise<void> {
    if (this.phase === Phase.Closed || !this.volume) {
      this.fatal(reason);
      return this.closed;
    }
    this.disconnecting = true;
    // A request not admitted yet, or a payload that will not be read to its end now (input is dropped): their bytes go back.
    this.dropBudget();
    // Keep reading (input is dropped, see consume) so the client's close is seen and 'close' fires.
    this.paused = false;
    this.socket.resume();
    this.maybeFinishDisconnect();
    return this.closed;
  }

  /** Drops the client at once, whatever its phase (a shutdown() that did not end in time: a client not reading its replies). */
  drop(reason: string): void {
    if (this.socket.destroyed) return;
    log.warn('nbd: closing connection', { reason, remote: this.socket.remoteAddress ?? 'unix' });
    this.phase = Phase.Closed;
    this.socket.destroy();
  }

  /**
   * What this connection holds of an export while its socket is open: the
   * volume it has a loan of (an option named it, or its transmission's), or
   * the name (as sent; '' for the default export) of the export an option
   * waits to open (afterOpen). Null when neither, or when it is closed or
   * closing with nothing in flight. A delete of the volume is refused while
   * one holds it (VolumeManager.deleteVolume).
   */
  exportInUse(): { volume: string } | { exportName: string } | null {
    // Closed with nothing in flight (after NBD_CMD_DISC, a drop): done with it, its socket closing.
    if (this.socketClosed || (this.phase === Phase.Closed && this.inflight === 0)) return null;
    if (this.lent !== null) return { volume: this.lent.name };
    if (this.openingExport !== null) return { exportName: this.openingExport };
    return null;
  }

  /** The client's address and port ('unix' on the Unix socket). */
  peer(): string {
    const addr = this.socket.remoteAddress;
    if (addr === undefined) return 'unix';
    return addr.includes(':') ? `[${addr}]:${this.socket.remotePort}` : `${addr}:${this.socket.remotePort}`;
  }

  private handshakeDeadline(): NodeJS.Timeout {
    return setTimeout(() => this.fatal('handshake timed out'), HANDSHAKE_TIMEOUT_MS);
  }

  /** Drops the client after a protocol violation we cannot recover from. */
  private fatal(reason: string): void {
    if (this.phase === Phase.Closed) return;
    log.warn('nbd: closing connection', { reason, remote: this.socket.remoteAddress ?? 'unix' });
    this.phase = Phase.Closed;
    this.socket.destroy();
  }

  /**
   * A bug met while handling this client's bytes: that client is dropped (its
   * unanswered requests were never acknowledged), the daemon and the others go on.
   */
  private dropOnInternalError(err: unknown): void {
    log.error('nbd: internal error handling a client: connection dropped', { err: (err as Error).stack ?? String(err) });
    this.phase = Phase.Closed;
    this.socket.destroy();
  }

  // ---- input buffering -------------------------------------------------

  /**
   * Bytes from the socket. With `transient`, `d` is a view of the server's
   * shared read buffer, overwritten by the next read: whatever is still
   * queued on return is copied out (only partial headers, or input that
   * arrived while paused; WRITE payloads are copied straight into their
   * pooled buffer as they arrive).
   */
  onSocketRead(d: Buffer, transient: boolean): void {
    try {
      this.consume(d, transient);
    } catch (err) {
      this.dropOnInternalError(err);
      return;
    }
    if (POLL_AFTER_REPLY_NS > 0n && !this.polling) this.pollForNext();
  }

  /**
   * QD1 busy-poll: after a lone reply went straight to the socket and
   * nothing is in flight anywhere, read the socket fd for up to
   * POLL_AFTER_REPLY_NS before going back to epoll. A client at queue depth
   * 1 sends its next request right after our reply; catching it here saves
   * the wakeup of a halted CPU, which on a VM is an IPI through the
   * hypervisor and the largest part of a 4k QD1 round trip. Bounded: at
   * most POLL_MAX_REQUESTS requests are served per event-loop turn, and the
   * poll ends the moment anything is in flight, so other connections wait
   * at most one poll window.
   */
  private pollForNext(): void {
    this.polling = true;
    try {
      for (let served = 0; served < POLL_MAX_REQUESTS; served++) {
        if (!this.lastReplyDirect || this.inflight !== 0 || daemonInflight !== 0 || this.chunks.length !== 0 || this.phase !== Phase.RequestHeader || this.paused || this.budget !== Budget.None) return;
        const fd = socketFd(this.socket);
        if (fd < 0) return;
        const target = this.nextReadBuffer(pollBuffer);
        const n = readWithin(fd, target, POLL_AFTER_REPLY_NS);
        // Nothing in the window, or EOF/an error: epoll and the stream take over (level-triggered, so they see it too).
        if (n <= 0) return;
        this.consume(target.subarray(0, n), true);
      }
    } finally {
      this.polling = false;
    }
  }

  private consume(d: Buffer, transient: boolean): void {
    // After NBD_CMD_DISC or a shutdown no request is served: drop input rather than queue it.
    if (this.phase === Phase.Closed || this.disconnecting) return;
    this.lastReplyDirect = false;
    if (d.buffer === this.directTarget?.buffer && d.byteOffset === this.directTarget.byteOffset) {
      // The kernel wrote these bytes straight into the WRITE payload.
      this.payloadFilled += d.length;
    } else {
      this.chunks.push(d);
      this.queuedBytes += d.length;
    }
    this.directTarget = null;
    // Replies produced while parsing this read (fast-path completions,
    // errors) leave together when it is done.
    this.inInputBatch = true;
    this.batchReplies = 0;
    this.socket.cork();
    try {
      this.pump();
    } finally {
      this.flushHeldReply();
      this.inInputBatch = false;
      this.socket.uncork();
    }
    if (this.opening && this.queuedBytes >= OPENING_MAX_QUEUED_BYTES) this.socket.pause();
    if (transient && this.chunks.length > 0) {
      const rest = this.chunks.length === 1 ? Buffer.from(this.chunks[0]!) : Buffer.concat(this.chunks);
      this.chunks.length = 0;
      this.chunks.push(rest);
    }
  }

  /**
   * Where the server's next socket read should land: the rest of the WRITE
   * payload being gathered when nothing is queued ahead of it (so 1 MiB
   * WRITEs are received like nbdkit does, with no copy), else `shared`.
   * Small remainders use `shared`: one read there often takes the payload
   * and the next request together.
   */
  nextReadBuffer(shared: Buffer): Buffer {
    const p = this.payload;
    this.directTarget = null;
    if (this.phase < Phase.RequestHeader) return handshakeReadBuffer(shared, this.queuedBytes);
    if (this.chunks.length !== 0) return shared;
    if (this.phase === Phase.WritePayload && p && p.length - this.payloadFilled >= DIRECT_READ_MIN_BYTES) {
      return (this.directTarget = p.subarray(this.payloadFilled));
    }
    if (this.phase === Phase.RequestHeader && this.headerOnlyRead) {
      // After a large WRITE another one likely follows: read just its header,
      // so its payload lands in place too instead of ~256 KiB of it being
      // read into `shared` and copied (a memmove of ~6% of the daemon's CPU
      // at 1 MiB writes over TCP). Costs one extra read per large WRITE.
      return this.headerTarget;
    }
    return shared;
  }

  /** Removes exactly n bytes from the front of the input queue (valid until the next socket read). */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length === n) {
      this.chunks.shift();
      this.queuedBytes -= n;
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      this.queuedBytes -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.queuedBytes -= n;
    return out;
  }

  private skip(n: number): number {
    let skipped = 0;
    while (skipped < n && this.chunks.length > 0) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - skipped);
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
      skipped += k;
    }
    this.queuedBytes -= skipped;
    return skipped;
  }

  private pump(): void {
    for (;;) {
      if (this.phase === Phase.Closed || this.disconnecting || this.opening) return;
      if (this.phase === Phase.OptionDiscard || this.phase === Phase.WriteDiscard) {
        this.discardLeft -= this.skip(this.discardLeft);
        if (this.discardLeft > 0) return;
        if (this.phase === Phase.OptionDiscard) {
          this.replyOptionError(this.optCode, P.REP_ERR_TOO_BIG, 'option data too large');
          this.setPhase(Phase.OptionHeader, P.OPTION_HEADER_BYTES);
        } else {
          this.reply(this.reqCookie, P.EINVAL, 'write payload larger than the maximum block size');
          this.setPhase(Phase.RequestHeader, P.REQUEST_HEADER_BYTES);
        }
        continue;
      }
      if (this.budget !== Budget.None) return;
      if (this.phase === Phase.WritePayload) {
        // Received even while paused: its budget bytes are held until it is in.
        if (!this.fillPayload()) {
          if (!this.payloadWatched) this.watchPayload();
          return;
        }
        const payload = this.payload!;
        this.payload = null;
        this.setPhase(Phase.RequestHeader, P.REQUEST_HEADER_BYTES);
        this.dispatch(this.reqType, this.reqFlags, this.reqCookie, this.reqOffset, this.reqLength, payload);
        if (this.paused) this.syncReading();
        continue;
      }
      if (this.paused) return;
      if (this.queuedBytes < this.need) return;
      const buf = this.take(this.need);
      switch (this.phase) {
        case Phase.ClientFlags:
          this.onClientFlags(buf.readUInt32BE(0));
          break;
        case Phase.OptionHeader:
          this.onOptionHeader(buf);
          break;
        case Phase.OptionData:
          this.onOption(this.optCode, buf);
          break;
        case Phase.RequestHeader:
          this.onRequestHeader(buf);
          break;
      }
    }
  }

  /** Copies queued input into the WRITE payload; true once it is complete. */
  private fillPayload(): boolean {
    const out = this.payload!;
    while (this.payloadFilled < out.length && this.chunks.length > 0) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, out.length - this.payloadFilled);
      c.copy(out, this.payloadFilled, 0, k);
      this.payloadFilled += k;
      this.queuedBytes -= k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return this.payloadFilled === out.length;
  }

  private setPhase(phase: Phase, need: number): void {
    this.phase = phase;
    this.need = need;
  }

  // ---- handshake -------------------------------------------------------

  private onClientFlags(flags: number): void {
    if ((flags & ~(P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES)) !== 0) {
      return this.fatal(`unknown client flags 0x${flags.toString(16)}`);
    }
    this.noZeroes = (flags & P.FLAG_C_NO_ZEROES) !== 0;
    this.setPhase(Phase.OptionHeader, P.OPTION_HEADER_BYTES);
  }

  private onOptionHeader(buf: Buffer): void {
    if (buf.readBigUInt64BE(0) !== P.IHAVEOPT) return this.fatal('bad option magic');
    this.optCode = buf.readUInt32BE(8);
    const len = buf.readUInt32BE(12);
    if (len > P.MAX_OPTION_BYTES) {
      if (this.optCode === P.OPT_EXPORT_NAME) return this.fatal('export name too long');
      this.discardLeft = len;
      this.phase = Phase.OptionDiscard;
      return;
    }
    if (len === 0) return this.onOption(this.optCode, Buffer.alloc(0));
    this.setPhase(Phase.OptionData, len);
  }

  private sendOptionReply(opt: number, type: number, data?: Buffer): void {
    const h = Buffer.allocUnsafe(20);
    h.writeBigUInt64BE(P.OPT_REPLY_MAGIC, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data ? data.length : 0, 16);
    this.socket.write(data && data.length > 0 ? Buffer.concat([h, data]) : h);
  }

  private replyOptionError(opt: number, type: number, message: string): void {
    this.sendOptionReply(opt, type, wireString(message));
  }

  private onOption(opt: number, data: Buffer, prepared = false): void {
    const name = prepared || this.exports.prepare === undefined ? null : optionExportName(opt, data);
    const ready = name === null ? null : this.exports.prepare!(name);
    if (ready !== null) return this.afterOpen(ready, opt, data, name!);
    if (this.phase !== Phase.Closed) this.setPhase(Phase.OptionHeader, P.OPTION_HEADER_BYTES);
    // The client is haggling, not idle: the handshake deadline counts from here.
    this.handshakeTimer?.refresh();
    switch (opt) {
      case P.OPT_EXPORT_NAME:
        return this.optExportName(data.toString('utf8'));
      case P.OPT_ABORT:
        this.sendOptionReply(opt, P.REP_ACK);
        this.phase = Phase.Closed;
        this.socket.end();
        return;
      case P.OPT_LIST:
        if (data.length !== 0) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
        for (const e of this.exports.list()) {
          const name = Buffer.from(e.name, 'utf8');
          // Bytes after the name are the export's description (libnbd shows them).
          const description = Buffer.from(e.description, 'utf8');
          const payload = Buffer.allocUnsafe(4 + name.length + description.length);
          payload.writeUInt32BE(name.length, 0);
          name.copy(payload, 4);
          description.copy(payload, 4 + name.length);
          this.sendOptionReply(opt, P.REP_SERVER, payload);
        }
        return this.sendOptionReply(opt, P.REP_ACK);
      case P.OPT_STARTTLS:
        return this.replyOptionError(opt, P.REP_ERR_UNSUP, 'TLS is not supported by this server');
      case P.OPT_INFO:
      case P.OPT_GO:
        return this.optInfoGo(opt, data);
      case P.OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        if (this.structured) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'structured replies already negotiated');
        this.structured = true;
        return this.sendOptionReply(opt, P.REP_ACK);
      case P.OPT_LIST_META_CONTEXT:
      case P.OPT_SET_META_CONTEXT:
        return this.optMetaContext(opt, data);
      default:
        return this.replyOptionError(opt, P.REP_ERR_UNSUP, `option ${opt} is not supported`);
    }
  }

  /**
   * Answers option `opt` once its export's volume is open (`ready`): a big
   * volume's open yields to the event loop between slices of its chunk map,
   * and this connection parses nothing meanwhile. The handshake deadline
   * does not run while the daemon is the one working. The open's loan is
   * given back once the option is answered (the option takes its own when
   * it uses the volume), or at once when the client is gone meanwhile: the
   * volume closes as one lent and released does (it lingers when costly).
   * Without it, an option refused by its own checks (SET_META_CONTEXT
   * before STRUCTURED_REPLY, a bad INFO) left the volume open for good, and
   * a client gone before a failed open had it opened again in one go.
   */
  private afterOpen(ready: Promise<Volume>, opt: number, data: Buffer, exportName: string): void {
    // A view of the server's read buffer may be overwritten by the next read.
    const own = Buffer.from(data);
    this.opening = true;
    this.openingExport = exportName;
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    // Read meanwhile up to a bound (consume), not paused outright: a client that hangs up is seen at once.
    if (this.queuedBytes >= OPENING_MAX_QUEUED_BYTES) this.socket.pause();
    const go = (held: Volume | null, failure?: unknown): void => {
      this.opening = false;
      this.openingExport = null;
      try {
        if (this.phase === Phase.Closed || this.disconnecting) return;
        if (!this.paused) this.socket.resume();
        this.handshakeTimer = this.handshakeDeadline();
        this.socket.cork();
        // The open failed: the option's lookup answers with that failure (resolve), not an open in one go.
        this.preparedFailure = held === null ? (failure ?? new Error('the open failed')) : undefined;
        try {
          this.onOption(opt, own, true);
        } finally {
          this.preparedFailure = undefined;
          this.socket.uncork();
        }
        this.pump();
      } finally {
        if (held !== null) this.exports.release(held);
      }
    };
    ready.then(go, (err: unknown) => go(null, err));
  }

  /**
   * The export's volume, or the error message for the client: a name with no
   * volume is "unknown export", a volume that cannot be opened (its pool
   * offline, its file failing) is "not available" with the pool and the
   * kind of failure (not the host's paths: those go to the log), so the
   * client's side says why and not that the export does not exist. Both are
   * NBD_REP_ERR_UNKNOWN, which proto.md defines as "the requested export is
   * not available"; the other codes make libnbd say something false
   * (ERR_POLICY "server policy prevents", ERR_SHUTDOWN "server is shutting
   * down") or, ERR_UNSUP to NBD_OPT_GO, fall back to NBD_OPT_EXPORT_NAME.
   */
  private lookup(name: string): Volume | string {
    try {
      const vol = this.exports.resolve(name, this.preparedFailure);
      // One loan per connection: the previous option's, given back after this one is taken (the same volume stays open).
      const before = this.lent;
      this.lent = vol;
      if (before !== null) this.exports.release(before);
      return vol;
    } catch (err) {
      if (err instanceof NotFound) return `unknown export ${quoteName(name)}`;
      // The client is told the pool and the kind of failure; the cause, with the host's paths, goes to the log.
      const cause = err instanceof ExportUnavailable ? err.cause : err;
      log.warn('nbd: export unavailable', { name: quoteName(name), err: (cause as Error).message });
      const why = err instanceof ExportUnavailable ? err.message : unavailableReason(err, undefined);
      return `export ${quoteName(name)} is not available: ${why}`;
    }
  }

  private transmissionFlags(vol: Volume): number {
    let f = P.TF_HAS_FLAGS | P.TF_SEND_FLUSH | P.TF_SEND_FUA | P.TF_CAN_MULTI_CONN | P.TF_SEND_CACHE;
    if (vol.rec.readOnly) f |= P.TF_READ_ONLY;
    else f |= P.TF_SEND_TRIM | P.TF_SEND_WRITE_ZEROES | P.TF_SEND_FAST_ZERO;
    if (this.structured) f |= P.TF_SEND_DF;
    return f;
  }

  private optExportName(name: string): void {
    const vol = this.lookup(name);
    // NBD_OPT_EXPORT_NAME has no error reply: the spec says to disconnect.
    if (typeof vol === 'string') return this.fatal(vol);
    const out = Buffer.alloc(this.noZeroes ? 10 : 134);
    out.writeBigUInt64BE(BigInt(vol.sizeBytes), 0);
    out.writeUInt16BE(this.transmissionFlags(vol), 8);
    this.socket.write(out);
    this.enterTransmission(vol);
  }

  private optInfoGo(opt: number, data: Buffer): void {
    if (data.length < 6) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'option data too short');
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 6) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'export name length exceeds option data');
    const name = data.toString('utf8', 4, 4 + nameLen);
    const nInfo = data.readUInt16BE(4 + nameLen);
    if (data.length !== 6 + nameLen + 2 * nInfo) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'information request count does not match option length');
    const vol = this.lookup(name);
    if (typeof vol === 'string') return this.replyOptionError(opt, P.REP_ERR_UNKNOWN, vol);
    const wanted = new Set<number>();
    for (let i = 0; i < nInfo; i++) wanted.add(data.readUInt16BE(6 + nameLen + 2 * i));

    const exp = Buffer.allocUnsafe(12);
    exp.writeUInt16BE(P.INFO_EXPORT, 0);
    exp.writeBigUInt64BE(BigInt(vol.sizeBytes), 2);
    exp.writeUInt16BE(this.transmissionFlags(vol), 10);
    this.sendOptionReply(opt, P.REP_INFO, exp);
    // Block sizes are always sent: min 1 means clients that ignore them are fine.
    const bs = Buffer.allocUnsafe(14);
    bs.writeUInt16BE(P.INFO_BLOCK_SIZE, 0);
    bs.writeUInt32BE(P.MIN_BLOCK_BYTES, 2);
    bs.writeUInt32BE(P.PREFERRED_BLOCK_BYTES, 6);
    bs.writeUInt32BE(P.MAX_PAYLOAD_BYTES, 10);
    this.sendOptionReply(opt, P.REP_INFO, bs);
    if (wanted.has(P.INFO_NAME)) {
      const n = Buffer.from(vol.name, 'utf8');
      const b = Buffer.allocUnsafe(2 + n.length);
      b.writeUInt16BE(P.INFO_NAME, 0);
      n.copy(b, 2);
      this.sendOptionReply(opt, P.REP_INFO, b);
    }
    if (wanted.has(P.INFO_DESCRIPTION)) {
      const d = Buffer.from(this.exports.description(vol.name), 'utf8');
      const b = Buffer.allocUnsafe(2 + d.length);
      b.writeUInt16BE(P.INFO_DESCRIPTION, 0);
      d.copy(b, 2);
      this.sendOptionReply(opt, P.REP_INFO, b);
    }
    this.sendOptionReply(opt, P.REP_ACK);
    if (opt === P.OPT_GO) this.enterTransmission(vol);
  }

  private optMetaContext(opt: number, data: Buffer): void {
    const set = opt === P.OPT_SET_META_CONTEXT;
    if (set && !this.structured) {
      return this.replyOptionError(opt, P.REP_ERR_INVALID, 'NBD_OPT_SET_META_CONTEXT needs structured replies first');
    }
    if (data.length < 8) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'option data too short');
    const nameLen = data.readUInt32BE(0);
    if (nameLen > data.length - 8) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'export name length exceeds option data');
    const name = data.toString('utf8', 4, 4 + nameLen);
    let pos = 4 + nameLen;
    const nQueries = data.readUInt32BE(pos);
    pos += 4;
    const queries: string[] = [];
    for (let i = 0; i < nQueries; i++) {
      if (pos + 4 > data.length) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'query list truncated');
      const qLen = data.readUInt32BE(pos);
      pos += 4;
      if (pos + qLen > data.length) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'query length exceeds option data');
      queries.push(data.toString('utf8', pos, pos + qLen));
      pos += qLen;
    }
    if (pos !== data.length) return this.replyOptionError(opt, P.REP_ERR_INVALID, 'trailing bytes after queries');
    const vol = this.lookup(name);
    if (typeof vol === 'string') return this.replyOptionError(opt, P.REP_ERR_UNKNOWN, vol);
    let matched: boolean;
    if (set) matched = queries.includes(P.BASE_ALLOCATION);
    else matched = queries.length === 0 || queries.some((q) => q === P.BASE_ALLOCATION || q === 'base:');
    if (set) this.metaAllocation = matched;
    if (matched) {
      const n = Buffer.from(P.BASE_ALLOCATION, 'utf8');
      const b = Buffer.allocUnsafe(4 + n.length);
      b.writeUInt32BE(P.BASE_ALLOCATION_ID, 0);
      n.copy(b, 4);
      this.sendOptionReply(opt, P.REP_META_CONTEXT, b);
    }
    this.sendOptionReply(opt, P.REP_ACK);
  }

  private enterTransmission(vol: Volume): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.volume = vol;
    this.exportFlags = this.transmissionFlags(vol);
    this.setPhase(Phase.RequestHeader, P.REQUEST_HEADER_BYTES);
  }

  // ---- transmission ----------------------------------------------------

  private onRequestHeader(h: Buffer): void {
    if (h.readUInt32BE(0) !== P.REQUEST_MAGIC) return this.fatal('bad request magic');
    this.reqFlags = h.readUInt16BE(4);
    this.reqType = h.readUInt16BE(6);
    this.reqCookie = Buffer.from(h.subarray(8, 16));
    const hi = h.readUInt32BE(16);
    // Offsets >= 2^53 are beyond any export we serve: keep them out of range.
    this.reqOffset = hi < 0x200000 ? hi * 0x100000000 + h.readUInt32BE(20) : Number.MAX_SAFE_INTEGER;
    this.reqLength = h.readUInt32BE(24);
    this.headerOnlyRead = false;
    if (this.reqType === P.CMD_WRITE) {
      if (this.reqLength > P.MAX_PAYLOAD_BYTES) {
        // Consume the payload so the stream stays in sync, then refuse.
        this.discardLeft = this.reqLength;
        this.phase = Phase.WriteDiscard;
        return;
      }
      if (this.reqLength > 0) {
        this.headerOnlyRead = this.reqLength >= DIRECT_READ_MIN_BYTES;
        // Counted before the buffer exists: a payload waiting for the budget has none.
        if (!this.admitBudget(this.reqLength)) return;
        return this.receivePayload();
      }
    }
    this.dispatch(this.reqType, this.reqFlags, this.reqCookie, this.reqOffset, this.reqLength, null);
  }

  /** The WRITE whose header was read last is admitted: its payload is read into a pooled buffer. */
  private receivePayload(): void {
    this.payload = payloadPool.get(this.reqLength);
    this.payloadFilled = 0;
    this.setPhase(Phase.WritePayload, this.reqLength);
    this.payloadWatched = false;
  }

  /** Starts the payload watch (PAYLOAD_STALL_MS) for the payload being received, left incomplete by the input at hand. */
  private watchPayload(): void {
    this.payloadWatched = true;
    this.payloadWatchFilled = this.payloadFilled;
    if (this.payloadWatch === null) this.payloadWatch = setTimeout(() => this.checkPayload(), PAYLOAD_STALL_MS).unref();
    else this.payloadWatch.refresh();
  }

  /** The payload watch (PAYLOAD_STALL_MS): a payload that got no byte since the last look drops its client. */
  private checkPayload(): void {
    if (this.phase !== Phase.WritePayload || this.payload === null || !this.payloadWatched) return;
    if (this.payloadFilled > this.payloadWatchFilled) {
      this.payloadWatchFilled = this.payloadFilled;
      this.payloadWatch!.refresh();
      return;
    }
    this.fatal(`write payload stalled: no byte of it for ${PAYLOAD_STALL_MS} ms (${this.payloadFilled} of ${this.payload.length} received)`);
  }

  /**
   * Takes `bytes` of the daemon-wide budget for the request parsed last, or
   * queues for them (false): the socket is not read until they are granted
   * (afterBudgetGrant then carries on with that request).
   */
  private admitBudget(bytes: number): boolean {
    if (inflightBudget.acquire(bytes, this)) return true;
    this.budget = Budget.Queued;
    this.budgetWaitBytes = bytes;
    this.socket.pause();
    return false;
  }

  /** BudgetWaiter: the bytes are counted; the request goes on in a microtask (not inside whoever released them). */
  budgetGranted(): void {
    this.budget = Budget.Granted;
    queueMicrotask(this.afterGrant);
  }

  private afterBudgetGrant(): void {
    if (this.budget !== Budget.Granted) return; // dropped meanwhile (dropBudget gave the bytes back)
    this.budget = Budget.None;
    if (this.phase === Phase.Closed || this.disconnecting) {
      inflightBudget.release(this.budgetWaitBytes);
      return;
    }
    this.socket.cork();
    try {
      if (this.reqType === P.CMD_WRITE) this.receivePayload();
      else this.execute(this.reqType, this.reqFlags, this.reqCookie, this.reqOffset, this.reqLength, null, this.budgetWaitBytes);
      // After the payload is set: a connection paused meanwhile (replies left unread) still reads an admitted payload.
      this.syncReading();
      this.pump();
    } catch (err) {
      // Run from a microtask: uncaught, a bug here would end the daemon, not this client.
      this.dropOnInternalError(err);
    } finally {
      this.socket.uncork();
    }
  }

  /** Gives back what this connection holds of the budget outside requests in flight: a queued or granted wait, a payload being received. */
  private dropBudget(): void {
    if (this.budget === Budget.Queued) inflightBudget.cancel(this);
    else if (this.budget === Budget.Granted) inflightBudget.release(this.budgetWaitBytes);
    this.budget = Budget.None;
    if (this.payload !== null) {
      inflightBudget.release(this.payload.length);
      this.payload = null;
    }
  }

  /**
   * Reads the socket unless waiting for the budget, opening an export, or
   * paused (its own cap, replies not read) with no admitted payload to receive.
   */
  private syncReading(): void {
    if (this.opening || this.budget !== Budget.None || (this.paused && this.payload === null)) this.socket.pause();
    else this.socket.resume();
  }

  private validate(type: number, flags: number, offset: number, length: number): [number, string] | null {
    const vol = this.volume!;
    const allowed = ALLOWED_FLAGS[type];
    if (allowed === undefined) return [P.EINVAL, `unknown command ${type}`];
    if ((flags & ~allowed) !== 0) return [P.EINVAL, `flags 0x${flags.toString(16)} not valid for command ${type}`];
    // DF is only defined (and only advertised) once structured replies are negotiated.
    if ((flags & P.CMD_FLAG_DF) !== 0 && !this.structured) return [P.EINVAL, 'NBD_CMD_FLAG_DF needs structured replies'];
    if (type === P.CMD_FLUSH) return null;
    const isWrite = type === P.CMD_WRITE || type === P.CMD_TRIM || type === P.CMD_WRITE_ZEROES;
    if (isWrite && vol.rec.readOnly) return [P.EPERM, 'export is read-only'];
    if (type === P.CMD_BLOCK_STATUS && !(this.structured && this.metaAllocation)) {
      return [P.EINVAL, 'block status needs structured replies and the base:allocation context'];
    }
    if (length === 0) return [P.EINVAL, 'zero-length request'];
    // CACHE carries no payload: any length is served (in MAX_PAYLOAD_BYTES steps, doCache), as nbdkit does.
    if (type === P.CMD_READ && length > P.MAX_PAYLOAD_BYTES) {
      return [P.EINVAL, `request of ${length} bytes exceeds the maximum block size ${P.MAX_PAYLOAD_BYTES}`];
    }
    if (offset + length > vol.sizeBytes) {
      // Same convention as nbdkit: writes past the end are "no space", other commands "invalid".
      const code = type === P.CMD_WRITE || type === P.CMD_WRITE_ZEROES ? P.ENOSPC : P.EINVAL;
      return [code, `request ${offset}+${length} is beyond the end of the export (${vol.sizeBytes} bytes)`];
    }
    return null;
  }

  private dispatch(type: number, flags: number, cookie: Buffer, offset: number, length: number, payload: Buffer | null): void {
    const vol = this.volume!;
    if (type === P.CMD_DISC) {
      this.disconnecting = true;
      this.maybeFinishDisconnect();
      return;
    }
    const invalid = this.validate(type, flags, offset, length);
    if (invalid) {
      if (payload) {
        payloadPool.release(payload);
        inflightBudget.release(payload.length);
      }
      return this.reply(cookie, invalid[0], invalid[1]);
    }
    // Counted against MAX_INFLIGHT_BYTES and the daemon-wide budget: the buffers the request holds
    // (WRITE payload, READ data, CACHE's one step), or for TRIM and WRITE_ZEROES the
    // work they queue (rangeCost), not the range they cover. Each path ends
    // with the same count (end releases it). A WRITE's payload took its budget before it was read.
    const cost = payload ? payload.length : type === P.CMD_READ ? length : type === P.CMD_CACHE ? Math.min(length, CACHE_STEP_BYTES) : type === P.CMD_TRIM || type === P.CMD_WRITE_ZEROES ? rangeCost(vol, offset, length) : 0;
    if (payload === null && cost > 0 && !this.admitBudget(cost)) return;
    this.execute(type, flags, cookie, offset, length, payload, cost);
  }

  /** Runs a valid, admitted request (its `cost` counted in the budget). */
  private execute(type: number, flags: number, cookie: Buffer, offset: number, length: number, payload: Buffer | null, cost: number): void {
    const vol = this.volume!;
    const fua = (flags & P.CMD_FLAG_FUA) !== 0;
    this.begin(cost);
    switch (type) {
      case P.CMD_READ:
        return this.doRead(vol, cookie, offset, length);
      case P.CMD_WRITE: {
        const data = payload ?? Buffer.alloc(0);
        if (!fua && this.idleFastPath(vol, data.length)) {
          let err: Error | null = null;
          let done = true;
          try {
            done = vol.writeSync(offset, data);
          } catch (e) {
            err = e as Error;
          }
          if (done) {
            payloadPool.release(data);
            return this.finish(cookie, err, data.length);
          }
        }
        // Volume.write never keeps `data` past its callback (the journal
        // copies what it holds), so the buffer always goes back to the pool.
        vol.write(offset, data, fua, (err) => {
          payloadPool.release(data);
          this.finish(cookie, err, data.length);
        });
        return;
      }
      case P.CMD_FLUSH:
        return this.settle(cookie, vol.flush(), 0);
      case P.CMD_TRIM:
        return this.settle(cookie, vol.trim(offset, length, fua), cost);
      case P.CMD_WRITE_ZEROES:
        return this.settle(
          cookie,
          vol.writeZeroes(offset, length, {
            fua,
            noHole: (flags & P.CMD_FLAG_NO_HOLE) !== 0,
            fastZero: (flags & P.CMD_FLAG_FAST_ZERO) !== 0,
          }),
          cost,
        );
      case P.CMD_CACHE:
        return this.doCache(vol, cookie, offset, length);
      case P.CMD_BLOCK_STATUS:
        return this.doBlockStatus(vol, cookie, flags, offset, length);
    }
  }

  /** See SYNC_MAX_BYTES: true when this request may block the event loop. */
  private idleFastPath(vol: Volume, lengthBytes: number): boolean {
    return lengthBytes <= SYNC_MAX_BYTES && this.inflight === 1 && daemonInflight === 1 && vol.rec.tier !== 'cold';
  }

  private doRead(vol: Volume, cookie: Buffer, offset: number, length: number): void {
    if (length >= POOLED_READ_BYTES) return this.doPooledRead(vol, cookie, offset, length);
    // Header and data in one buffer: one iovec per reply.
    // Pooled: a fresh 4 KiB+ ArrayBuffer per reply cost ~10% of the loop's
    // time in allocation and GC at randread 4k QD32.
    const at = this.structured ? 28 : 16;
    const out = payloadPool.get(at + length);
    this.writeReadHeader(out, cookie, offset, length);
    if (this.idleFastPath(vol, length)) {
      let done: boolean;
      try {
        done = vol.readSync(offset, length, out, at);
      } catch (err) {
        payloadPool.release(out);
        return this.finish(cookie, err as Error, length);
      }
      if (done) {
        this.send(out, () => payloadPool.release(out));
        return this.end(length);
      }
    }
    vol.read(offset, length, out, at, (err) => {
      if (err) {
        payloadPool.release(out);
        return this.finish(cookie, err, length);
      }
      this.send(out, () => payloadPool.release(out));
      this.end(length);
    });
  }

  /** The reply header of a successful READ (simple, or one structured OFFSET_DATA chunk) at out[0..16 or 28). */
  private writeReadHeader(out: Buffer, cookie: Buffer, offset: number, length: number): void {
    if (this.structured) {
      out.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
      out.writeUInt16BE(P.REPLY_FLAG_DONE, 4);
      out.writeUInt16BE(P.REPLY_TYPE_OFFSET_DATA, 6);
      cookie.copy(out, 8);
      out.writeUInt32BE(8 + length, 16);
      writeUInt64(out, offset, 20);
    } else {
      out.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
      out.writeUInt32BE(0, 4);
      cookie.copy(out, 8);
    }
  }

  /** Large reads: header and data go out as two buffers; the data buffer is recycled once sent. */
  private doPooledRead(vol: Volume, cookie: Buffer, offset: number, length: number): void {
    const data = payloadPool.get(length);
    vol.read(offset, length, data, 0, (err) => {
      if (err) {
        payloadPool.release(data);
        return this.finish(cookie, err, length);
      }
      const header = Buffer.allocUnsafe(this.structured ? 28 : 16);
      this.writeReadHeader(header, cookie, offset, length);
      if (this.socket.destroyed) {
        payloadPool.release(data);
      } else {
        // Corked so header and data leave in one writev.
        this.socket.cork();
        this.send(header);
        this.send(data, () => payloadPool.release(data));
        this.socket.uncork();
      }
      this.end(length);
    });
  }

  /**
   * Advisory prefetch: reads the range's data (holes skipped) so it is warm
   * in the page cache, CACHE_STEP_BYTES at a time into one buffer. A CACHE
   * longer than the maximum block size was EINVAL (the spec allows that;
   * nbdkit serves it, and so do we now). After NBD_CMD_DISC or at a daemon
   * stop it ends at its next step, with success: it only warms, and read on
   * to its end it held the close (a daemon stop waited out its grace, then
   * dropped the connection).
   */
  private doCache(vol: Volume, cookie: Buffer, offset: number, length: number): void {
    const step = Math.min(length, CACHE_STEP_BYTES);
    const scratch = payloadPool.get(step);
    const end = offset + length;
    let pos = offset;
    // End of the base:allocation data extent pos is in (asked once per extent, not per step).
    let dataEnd = offset;
    const next = (err: Error | null): void => {
      if (err === null && pos < end && !this.socket.destroyed && !this.disconnecting) {
        // Holes hold nothing to warm: skipped.
        while (pos >= dataEnd && pos < end) {
          const [e] = vol.blockStatus(pos, end - pos, 1);
          if (e === undefined) dataEnd = end;
          else if (e.flags === 0) dataEnd = pos + e.lengthBytes;
          else pos += e.lengthBytes;
        }
        if (pos < end) {
          const at = pos;
          const n = Math.min(step, dataEnd - pos);
          pos += n;
          vol.read(at, n, scratch, 0, next);
          return;
        }
      }
      payloadPool.release(scratch);
      this.finish(cookie, err, step);
    };
    next(null);
  }

  private doBlockStatus(vol: Volume, cookie: Buffer, flags: number, offset: number, length: number): void {
    const maxExtents = flags & P.CMD_FLAG_REQ_ONE ? 1 : 1024;
    const extents = vol.blockStatus(offset, length, maxExtents);
    const payloadLen = 4 + 8 * extents.length;
    const out = Buffer.allocUnsafe(20 + payloadLen);
    out.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
    out.writeUInt16BE(P.REPLY_FLAG_DONE, 4);
    out.writeUInt16BE(P.REPLY_TYPE_BLOCK_STATUS, 6);
    cookie.copy(out, 8);
    out.writeUInt32BE(payloadLen, 16);
    out.writeUInt32BE(P.BASE_ALLOCATION_ID, 20);
    let pos = 24;
    for (const e of extents) {
      out.writeUInt32BE(e.lengthBytes, pos);
      out.writeUInt32BE(e.flags, pos + 4);
      pos += 8;
    }
    this.send(out);
    this.end(0);
  }

  private settle(cookie: Buffer, p: Promise<void>, bytes: number): void {
    p.then(
      () => this.finish(cookie, null, bytes),
      (err: Error) => this.finish(cookie, err, bytes),
    );
  }

  private begin(bytes: number): void {
    daemonInflight++;
    this.inflight++;
    this.inflightBytes += bytes;
    if (!this.paused && (this.inflight >= MAX_INFLIGHT_REQUESTS || this.inflightBytes >= MAX_INFLIGHT_BYTES)) {
      this.paused = true;
      this.syncReading();
    }
  }

  private finish(cookie: Buffer, err: Error | null, bytes: number): void {
    if (err) {
      const code = nbdErrno(err);
      if (code === P.EIO) log.error('nbd: I/O error', { volume: this.volume?.name, err: err.message });
      this.reply(cookie, code, err.message);
    } else {
      this.reply(cookie, 0, '');
    }
    this.end(bytes);
  }

  private end(bytes: number): void {
    daemonInflight--;
    this.inflight--;
    this.inflightBytes -= bytes;
    inflightBudget.release(bytes);
    this.maybeResume();
    this.maybeFinishDisconnect();
    if (this.socketClosed) this.releaseVolume();
  }

  /**
   * Gives the volume's loan back once the socket has closed (NBD_CMD_DISC,
   * NBD_OPT_ABORT, the client's reset, a protocol error, a handshake
   * timeout, a daemon stop) and every request it had in flight has
   * completed: a client's reset does not cut its requests short, and a
   * volume given back under them would not be quiet (stays open, idle).
   */
  private releaseVolume(): void {
    if (this.lent === null || this.inflight !== 0) return;
    const vol = this.lent;
    this.lent = null;
    this.exports.release(vol);
  }

  private maybeResume(): void {
    if (!this.paused || this.phase === Phase.Closed) return;
    if (this.inflight < MAX_INFLIGHT_REQUESTS / 2 && this.inflightBytes < MAX_INFLIGHT_BYTES / 2 && this.socket.writableLength <= MAX_UNSENT_REPLY_BYTES / 2) {
      this.paused = false;
      this.syncReading();
      this.pump();
    }
  }

  private maybeFinishDisconnect(): void {
    if (this.disconnecting && this.inflight === 0 && this.phase !== Phase.Closed) {
      this.phase = Phase.Closed;
      // Once every reply is handed to the kernel and our FIN queued, the
      // connection is closed: not left half-open waiting for the client to
      // close its end. An idle libnbd handle reads the socket only inside a
      // call, so it never would, and a daemon stop then waited out its whole
      // grace period (test review-nbd-shutdown-idle).
      this.socket.end(() => this.closeAfterFinish());
    }
  }

  /**
   * Closes the fd after our FIN. Input still unread at close(2) makes the
   * kernel reset the connection and drop what is left in the send queue
   * (replies the client has not received yet), so whatever the client sent
   * meanwhile is read and dropped first.
   */
  private closeAfterFinish(): void {
    if (this.socket.destroyed) return;
    const fd = socketFd(this.socket);
    for (let i = 0; fd >= 0 && i < MAX_DRAIN_READS; i++) {
      let n: number;
      try {
        n = fs.readSync(fd, pollBuffer, 0, pollBuffer.length, null);
      } catch {
        break; // EAGAIN: nothing left to read (or the socket is gone)
      }
      if (n <= 0) break;
    }
    this.socket.destroy();
  }

  private send(buf: Buffer, sent?: () => void): void {
    if (this.phase === Phase.Closed && this.socket.destroyed) {
      sent?.();
      return;
    }
    if (this.inInputBatch && this.batchReplies++ === 0) {
      this.heldReply = buf;
      this.heldReplySent = sent;
      return;
    }
    if (this.heldReply) {
      // A second reply in this batch: all of them go through the (corked) stream, in order.
      const held = this.heldReply;
      this.heldReply = null;
      this.writeReply(held, this.heldReplySent);
    }
    this.writeReply(buf, sent);
  }

  /**
   * Sends the reply held back when it was the only one a socket read caused
   * (the QD1 case). With nothing queued ahead of it, it is written to the
   * socket fd directly: the stream's write machinery (write request object,
   * callbacks, nextTick) cost more than the write(2) itself there (daemon
   * CPU per randread 4k QD1 request 21 -> 14.5 us over a Unix socket).
   * Otherwise, or on a partial or failed direct write, the stream takes it
   * (and reports any socket error the usual way).
   */
  private flushHeldReply(): void {
    const buf = this.heldReply;
    if (!buf) return;
    const sent = this.heldReplySent;
    this.heldReply = null;
    this.heldReplySent = undefined;
    let written = 0;
    const fd = this.socket.writableLength === 0 && !this.socket.destroyed ? socketFd(this.socket) : -1;
    if (fd >= 0) {
      try {
        written = fs.writeSync(fd, buf, 0, buf.length);
      } catch {
        written = 0; // EAGAIN (socket buffer full) or a dead socket: the stream path handles both
      }
    }
    if (written === buf.length) {
      this.lastReplyDirect = true;
      sent?.();
      return;
    }
    this.writeReply(written === 0 ? buf : buf.subarray(written), sent);
  }

  private writeReply(buf: Buffer, sent?: () => void): void {
    // Completions that land in the same poll phase are corked together and
    // flushed in the check phase: one writev instead of a syscall per reply.
    if (!this.replyBatchOpen && !this.inInputBatch) {
      this.replyBatchOpen = true;
      this.socket.cork();
      setImmediate(this.closeReplyBatch);
    }
    // The callback runs once the bytes are handed to the kernel, or with an error if the socket dies first.
    this.socket.write(buf, sent);
    if (this.socket.writableLength > MAX_UNSENT_REPLY_BYTES && !this.paused) {
      // The client is not reading replies: stop reading its requests (a payload being received is read to its end first).
      this.paused = true;
      this.syncReading();
    }
  }

  /** Simple reply, or a structured error chunk for reads when negotiated. */
  private reply(cookie: Buffer, errno: number, message: string): void {
    if (errno !== 0 && this.structured) {
      const msg = wireString(message);
      const out = Buffer.allocUnsafe(26 + msg.length);
      out.writeUInt32BE(P.STRUCTURED_REPLY_MAGIC, 0);
      out.writeUInt16BE(P.REPLY_FLAG_DONE, 4);
      out.writeUInt16BE(P.REPLY_TYPE_ERROR, 6);
      cookie.copy(out, 8);
      out.writeUInt32BE(6 + msg.length, 16);
      out.writeUInt32BE(errno, 20);
      out.writeUInt16BE(msg.length, 24);
      msg.copy(out, 26);
      return this.send(out);
    }
    const out = Buffer.allocUnsafe(16);
    out.writeUInt32BE(P.SIMPLE_REPLY_MAGIC, 0);
    out.writeUInt32BE(errno, 4);
    cookie.copy(out, 8);
    this.send(out);
  }
}

/** One non-blocking read of fd, retried until data, EOF or error, or until windowNs has passed (-1). */
function readWithin(fd: number, target: Buffer, windowNs: bigint): number {
  const deadline = process.hrtime.bigint() + windowNs;
  for (;;) {
    try {
      return fs.readSync(fd, target, 0, target.length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return -1;
    }
    if (process.hrtime.bigint() >= deadline) return -1;
  }
}

/** The OS descriptor under a net.Socket (TCP or Unix), or -1 where Node does not expose it. */
function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/**
 * A message as a wire string: UTF-8, cut to MAX_STRING_BYTES at a character
 * boundary. Messages can quote client input (export names up to the 64 KiB
 * option limit); libnbd drops the connection on a longer string.
 */
function wireString(message: string): Buffer {
  const b = Buffer.from(message, 'utf8');
  if (b.length <= P.MAX_STRING_BYTES) return b;
  let end = P.MAX_STRING_BYTES;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--; // back off to the start of a character
  return b.subarray(0, end);
}

/** An export name for messages and logs: quoted, and shortened (names can be 64 KiB of client input). */
const MAX_QUOTED_NAME_CHARS = 128;
function quoteName(name: string): string {
  if (name.length <= MAX_QUOTED_NAME_CHARS) return JSON.stringify(name);
  return `${JSON.stringify(name.slice(0, MAX_QUOTED_NAME_CHARS))}... (${name.length} characters)`;
}

function writeUInt64(buf: Buffer, value: number, pos: number): void {
  buf.writeUInt32BE(Math.floor(value / 0x100000000), pos);
  buf.writeUInt32BE(value >>> 0, pos + 4);
}

/** The export an option names, for those that open it (EXPORT_NAME, INFO, GO, the meta-context ones); null for others or bad data (the option's own checks answer that). */
function optionExportName(opt: number, data: Buffer): string | null {
  if (opt === P.OPT_EXPORT_NAME) return data.toString('utf8');
  if (opt !== P.OPT_INFO && opt !== P.OPT_GO && opt !== P.OPT_LIST_META_CONTEXT && opt !== P.OPT_SET_META_CONTEXT) return null;
  if (data.length < 4) return null;
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 4) return null;
  return data.toString('utf8', 4, 4 + nameLen);
}
