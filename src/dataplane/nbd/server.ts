// NBD listener on TCP and a Unix socket; one export per volume.
import fs from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { NotFound } from '../errors.js';
import type { VolumeRecord } from '../meta/store.js';
import type { VolumeClients, VolumeManager } from '../volumes/manager.js';
import type { Volume } from '../volumes/volume.js';
import { NbdConnection, handshakeReadBuffer, type ExportResolver } from './connection.js';
import { ExportUnavailable, unavailableReason } from './errors.js';
import { log } from '../../log.js';

export const DEFAULT_NBD_PORT = 10809;
/** Bound on concurrent client connections; further ones are refused. */
export const MAX_CONNECTIONS = 1024;
/** Bound on how long a shutdown (or a forced volume delete's disconnect) waits for in-flight requests to be answered. */
const SHUTDOWN_GRACE_MS = 10_000;
/**
 * A closed connection's loan is kept this many times what the volume's open
 * cost (resolve), at most LINGER_MAX_MS: a client that reconnects within it
 * (qemu-img info then convert, nbdinfo then nbdcopy) finds the volume open.
 * An open reads the whole chunk map from the index on the event loop (~110 ms
 * for 100,000 entries, every client stalled meanwhile); paid at each connect,
 * as once a volume closes with its last client, a client reconnecting in a
 * row spent most of its time there. Kept a multiple of the open cost, the
 * reopens cost at most 1/LINGER_PER_OPEN_MS of the time such a client takes;
 * a cheap volume (an open under 5 ms) closes at once as before.
 */
const LINGER_PER_OPEN_MS = 20;
const LINGER_MAX_MS = 2_000;
/** Below this a volume is given back at once: its open (< 5 ms) is not worth keeping it for. */
const LINGER_MIN_MS = 100;
/** Bound on the loans kept so (the oldest is given back first): the open volumes they hold. */
const MAX_LINGERING = 64;

export interface NbdServerOptions {
  manager: VolumeManager;
  /** Volume served for the empty export name (nbd://host with no path). */
  defaultExport?: string;
}

export class NbdServer implements ExportResolver, VolumeClients {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly connections = new Set<NbdConnection>();
  /** Volumes the last lists left out (logged once until listed again); bounded by the volume count. */
  private readonly unlisted = new Set<string>();
  /** Loans being given back after a FLUSH (release), one per closed connection at most; close() waits for them. */
  private readonly releasing = new Set<Promise<void>>();
  /** What the last open of a volume by resolve() cost, in ms (a cached one is not counted); weak: gone with the Volume. */
  private readonly openCostMs = new WeakMap<Volume, number>();
  /** Loans of closed connections kept a while (LINGER_PER_OPEN_MS), at most one per volume and MAX_LINGERING in all; oldest first. */
  private readonly lingering = new Map<Volume, NodeJS.Timeout>();
  private closing = false;
  /** Ends this server's registration with the manager (deleteVolume asks it about a volume's clients). */
  private readonly unregisterClients: () => void;

  constructor(private readonly opts: NbdServerOptions) {
    this.unregisterClients = opts.manager.addVolumeClients(this);
  }

  /** The volume `name` as sent names ('' the default export), undefined when none. */
  private target(name: string): string | undefined {
    return name === '' ? this.opts.defaultExport : name;
  }

  /** The open connections that hold volume `name`'s export or are opening it (NbdConnection.exportInUse). */
  private connectionsOf(name: string): NbdConnection[] {
    return [...this.connections].filter((c) => {
      const use = c.exportInUse();
      if (use === null) return false;
      return 'volume' in use ? use.volume === name : this.target(use.exportName) === name;
    });
  }

  clientsOf(name: string): string[] {
    return this.connectionsOf(name).map((c) => c.peer());
  }

  /**
   * A forced delete's disconnect of volume `name`'s clients, as close() does
   * for all: no further request read, those in flight answered, then the
   * socket closed (the client sees the connection end, never a reply it
   * did not get whole); one still haggling is dropped at once. Whatever is
   * left after SHUTDOWN_GRACE_MS (a client not reading its replies) is
   * dropped. Resolves once every one is closed and its loan given back.
   */
  async disconnectClients(name: string): Promise<void> {
    const conns = this.connectionsOf(name);
    if (conns.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((r) => (timer = setTimeout(r, SHUTDOWN_GRACE_MS)));
    await Promise.race([Promise.all(conns.map((c) => c.shutdown(`volume ${name} is being deleted`))), grace]);
    clearTimeout(timer);
    for (const c of conns) c.drop(`volume ${name} is being deleted`);
    await Promise.all(conns.map((c) => c.closed));
    // Their loans' FLUSHes (release): done before the delete closes the volume.
    await Promise.allSettled([...this.releasing]);
  }

  /**
   * The export's open volume, lent to the connection until release() (one
   * Volume per volume, shared by all its connections: a FLUSH on one covers
   * the writes of all, as NBD_FLAG_CAN_MULTI_CONN promises). NotFound when
   * no volume has the name; ExportUnavailable (what the client may be told,
   * the cause for the log) when it has but cannot be opened.
   */
  resolve(name: string, failedOpen?: unknown): Volume {
    const target = this.target(name);
    if (!target) throw new NotFound('no default export configured');
    const manager = this.opts.manager;
    const rec = manager.getVolumeRecord(target);
    // One being deleted is gone already to a client (deleteVolume: never lent a volume it then pulls).
    if (!rec || manager.isBeingDeleted(target)) throw new NotFound(`no volume named ${target}`);
    try {
      // The open prepare() waited on failed (a chunk map that cannot be read, a pool offline): its failure is
      // the answer. Opened again here in one go, a big map was read whole again to fail the same way, the
      // event loop held (~1.4 ms per 1,000 entries) at every connect. Only a failure the manager recorded
      // as this volume's (openFailure): not a delete or a stop, nor the name taken by a new volume meanwhile.
      if (failedOpen !== undefined && manager.openFailure(target) !== undefined) throw failedOpen;
      const t0 = performance.now();
      const vol = manager.borrowVolume(target);
      const ms = performance.now() - t0;
      if (ms >= 1) this.openCostMs.set(vol, ms);
      return vol;
    } catch (err) {
      // Marked lost by `pools replace --discard-volumes`: it never opens again; the operator can only delete it.
      const lost = rec.lostOnPools ?? [];
      if (lost.length > 0) throw new ExportUnavailable(`its data was lost with pool ${lost.join(', ')}'s disk (replaced with \`pools replace --discard-volumes\`): it can only be deleted`, { cause: err });
      const pool = manager.openFailure(target)?.pool;
      const present = pool !== undefined && (manager.pools.get(pool)?.offlineButPresent() ?? false);
      throw new ExportUnavailable(unavailableReason(err, pool, present), { cause: err });
    }
  }

  /**
   * Opens the export's volume when it is not open, its chunk map read a
   * slice at a time (VolumeManager.prepareOpen): the connection answers
   * the option once it settles, and other clients are served meanwhile
   * (read in one go, a volume of 1M chunk entries held the event loop ~4 s).
   * Resolves with a loan of the volume (release() it); rejects with the
   * open's failure, which the option's resolve() answers with.
   */
  prepare(name: string): Promise<Volume> | null {
    const target = this.target(name);
    if (!target || this.opts.manager.isBeingDeleted(target)) return null;
    let opening: Promise<Volume> | null;
    try {
      opening = this.opts.manager.prepareOpen(target);
    } catch {
      // A name the index cannot look up (longer than an LMDB key): the option's own lookup answers the client.
      return null;
    }
    if (opening === null) return null;
    return opening.then((vol) => {
      if (vol.openCostMs >= 1) this.openCostMs.set(vol, vol.openCostMs);
      return vol;
    });
  }

  /**
   * Ends a connection's loan of `vol`. The last loan closes the volume when
   * nothing else holds it and it is quiet (VolumeManager.closeIfUnheld); one
   * with writes no FLUSH covered yet (a client that disconnects without
   * one: nbdsh, a killed VM) is made durable first, so it closes too rather
   * than staying open for good. Its write-back error is not lost that way:
   * a failed sync takes the volume offline (failed volumes stay open, EIO
   * until a restart). A failed or deleted volume is given back as it is.
   * The loan ends at once or, for a volume whose open was costly, a while
   * later (keepBriefly).
   */
  release(vol: Volume): void {
    if (vol.failed !== null || vol.quiet()) return this.keepBriefly(vol);
    const done = vol
      .flush()
      .catch((err: Error) => log.debug('nbd: flush at a connection close failed', { volume: vol.name, err: err.message }))
      .then(() => {
        this.releasing.delete(done);
        this.keepBriefly(vol);
      });
    this.releasing.add(done);
  }

  /**
   * Gives a closed connection's loan back after LINGER_PER_OPEN_MS times
   * what the volume's open cost (at once for a cheap one, a failed one, or
   * while the server closes). One such loan per volume: a later one replaces
   * it (the earlier is given back, the volume stays held).
   */
  private keepBriefly(vol: Volume): void {
    const manager = this.opts.manager;
    const lingerMs = Math.min(LINGER_MAX_MS, LINGER_PER_OPEN_MS * (this.openCostMs.get(vol) ?? 0));
    if (this.closing || vol.failed !== null || lingerMs < LINGER_MIN_MS) return manager.giveBack(vol);
    const before = this.lingering.get(vol);
    if (before !== undefined) {
      clearTimeout(before);
      this.lingering.delete(vol);
      manager.giveBack(vol);
    } else if (this.lingering.size >= MAX_LINGERING) {
      const [oldest, timer] = this.lingering.entries().next().value as [Volume, NodeJS.Timeout];
      clearTimeout(timer);
      this.lingering.delete(oldest);
      manager.giveBack(oldest);
    }
    const timer = setTimeout(() => {
      this.lingering.delete(vol);
      manager.giveBack(vol);
    }, lingerMs);
    timer.unref();
    this.lingering.set(vol, timer);
  }

  /**
   * NBD_OPT_LIST: the exports a client can open now. A volume that cannot be
   * opened (its pool offline) is left out: clients probe every listed export
   * (nbdinfo --list sends NBD_OPT_INFO/GO to each and exits 1, its --json
   * output left unterminated, when one is refused), and the list should not
   * name what the next option is refused for. Asked by name it is refused
   * with the reason; the operator sees it in `couchestor volumes list` /
   * health and in the log line below (once each time it drops out).
   *
   * Answered from the index and the pools' state, opening no volume: a
   * volume whose placement pool is online and whose last open did not fail
   * is listed as it is. Opening each (a file descriptor kept per volume, the
   * index's chunk entries read, all on the event loop) made the first list
   * after a start with 10,000 volumes take 21-27 s with every other client
   * stalled. Only a volume that may not open (its pool offline or not
   * configured, its file missing, its data lost, its last open failed) is opened to decide:
   * that fails fast while the pool is out, and lists it again once the pool
   * is back (adopted by Pool.isOnline). A chunk left on a second pool by an
   * interrupted move, that pool offline, is listed and refused when asked.
   */
  list(): { name: string; description: string }[] {
    const manager = this.opts.manager;
    const online = new Map<string, boolean>();
    const poolOnline = (name: string): boolean => {
      let o = online.get(name);
      if (o === undefined) {
        const pool = manager.pools.get(name);
        o = pool !== undefined && pool.isOnline();
        online.set(name, o);
      }
      return o;
    };
    const out: { name: string; description: string }[] = [];
    for (const rec of manager.listVolumes()) {
      if (manager.isBeingDeleted(rec.name)) continue;
      // Its file gone from an online pool (removed outside the daemon): one stat, ~2 us, against an open's fdatasync.
      const mayNotOpen = manager.openFailure(rec.name) !== undefined || (rec.lostOnPools?.length ?? 0) > 0 || !poolOnline(rec.poolName) || !fs.existsSync(manager.pools.get(rec.poolName)!.volumeFile(rec.id));
      if (mayNotOpen) {
        // Tried, and closed again when nothing holds it (a pinned open kept every listed volume open). A big
        // chunk map is tried in the background, a slice at a time (read in one go, a 1M-entry map held the
        // event loop seconds at every list): answered by its last try meanwhile.
        const tried = manager.tryOpenNow(rec);
        const failure = tried === 'pending' ? manager.openFailure(rec.name) : tried;
        if (failure !== undefined) {
          if (!this.unlisted.has(rec.name)) {
            this.unlisted.add(rec.name);
            log.warn('nbd: export left out of the export list: its volume cannot be opened', { name: rec.name, pool: failure.pool, err: failure.error });
          }
          continue;
        }
      }
      this.unlisted.delete(rec.name);
      out.push({ name: rec.name, description: this.describe(rec) });
    }
    return out;
  }

  description(name: string): string {
    const v = this.opts.manager.getVolumeRecord(name);
    return v ? this.describe(v) : '';
  }

  private describe(v: VolumeRecord): string {
    return `CoucheStor volume ${v.name} (${v.tier}, pool ${v.poolName})`;
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  private accept(raw: net.Socket): void {
    if (this.sockets.size >= MAX_CONNECTIONS) {
      log.warn('nbd: connection limit reached, refusing client', { limit: MAX_CONNECTIONS });
      raw.destroy();
      return;
    }
    let conn: NbdConnection | null = null;
    const socket = withOwnReadBuffer(
      raw,
      (shared) => conn?.nextReadBuffer(shared) ?? handshakeReadBuffer(shared),
      (bytes) => conn!.onSocketRead(bytes, true),
    );
    this.sockets.add(socket);
    conn = new NbdConnection(
      socket,
      this,
      () => {
        this.sockets.delete(socket);
        this.connections.delete(conn!);
      },
      socket !== raw,
    );
    this.connections.add(conn);
  }

  async listenTcp(port = DEFAULT_NBD_PORT, host = '127.0.0.1'): Promise<AddressInfo> {
    const srv = net.createServer({ noDelay: true, pauseOnConnect: true }, (s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => resolve());
    });
    this.servers.push(srv);
    return srv.address() as AddressInfo;
  }

  async listenUnix(socketPath: string): Promise<void> {
    // A socket file left by a killed daemon would make listen fail with EADDRINUSE.
    fs.rmSync(socketPath, { force: true });
    const srv = net.createServer({ pauseOnConnect: true }, (s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(socketPath, () => resolve());
    });
    this.servers.push(srv);
  }

  /**
   * Stops accepting, lets every connection finish the requests it has in
   * flight and send their replies (NbdConnection.shutdown), then drops what
   * is left after SHUTDOWN_GRACE_MS (a client not reading its replies).
   */
  async close(): Promise<void> {
    this.closing = true;
    const listenersClosed = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((r) => (timer = setTimeout(r, SHUTDOWN_GRACE_MS)));
    await Promise.race([Promise.all([...this.connections].map((c) => c.shutdown())), grace]);
    clearTimeout(timer);
    for (const s of this.sockets) s.destroy();
    await listenersClosed;
    // Loans given back after their FLUSH (the manager closes every volume next).
    await Promise.allSettled([...this.releasing]);
    for (const [vol, timer] of this.lingering) {
      clearTimeout(timer);
      this.opts.manager.giveBack(vol);
    }
    this.lingering.clear();
    // Last: while the clients drain, a delete still sees those with requests
    // in flight (refused, or --force waits for them); unregistered first, one
    // went ahead and the volume was closed under them.
    this.unregisterClients();
  }
}

/**
 * Every socket read lands here (net.Socket's `onread` option), not in a
 * fresh 64 KiB ArrayBuffer per read as with 'data' events: at 1 MiB WRITEs
 * those allocations and the stream machinery around them capped the receive
 * side at 360-390 MB/s with the volume write stubbed out. One buffer serves
 * every connection: libuv hands it to one read at a time and
 * NbdConnection.onSocketRead consumes or copies the bytes before returning.
 * (Large WRITE payloads bypass it: see NbdConnection.nextReadBuffer.)
 */
const READ_BUFFER_BYTES = 256 * 1024;
const sharedReadBuffer = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES);

/**
 * Accepted sockets cannot be given `onread` (net.Server builds them), so the
 * connection's handle (accepted paused, pauseOnConnect) is moved to a new
 * Socket that has it. The old wrapper is destroyed without its handle, which
 * also drops it from the server's connection count; we track our own.
 * Falls back to the original socket (and 'data' events) if the handle is not
 * where Node 20 keeps it.
 */
function withOwnReadBuffer(raw: net.Socket, target: (shared: Buffer) => Buffer, onBytes: (bytes: Buffer) => void): net.Socket {
  const holder = raw as unknown as { _handle: unknown };
  const handle = holder._handle;
  if (!handle) {
    raw.resume();
    return raw;
  }
  holder._handle = null;
  raw.destroy();
  const opts = {
    handle,
    readable: true,
    writable: true,
    onread: {
      // Asked before every read: the connection may point it into a WRITE payload.
      buffer: (): Buffer => target(sharedReadBuffer),
      callback: (bytesRead: number, buf: Buffer): void => onBytes(buf.subarray(0, bytesRead)),
    },
  };
  // `handle` (and `onread` outside connect()) are accepted by Node 20's Socket but not in @types/node.
  return new net.Socket(opts as unknown as net.SocketConstructorOpts);
}
