// The `couchestor` command. Volume commands go through a running daemon's
// admin API when there is one, else straight to the metadata on disk.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, parseSize } from './config.js';
import { openManager, poolDirs, readDaemonState, serve } from './daemon.js';
import type { PoolRecord, VolumeRecord } from './dataplane/meta/store.js';
import { segmentFilesBytes } from './dataplane/ec/segment-store.js';
import { runHardwareScanCli } from './control/hardware/index.js';
import { fsck, fsckFoundDamage } from './dataplane/fsck.js';
import { listQuarantine, quarantineDamagedRecords } from './dataplane/objects/quarantine.js';
import { salvageJournalDir } from './dataplane/journal/journal.js';
import { MigrationAborted, migrateVolume, stopMigrations, type MigrationProgress } from './dataplane/volumes/migration.js';
import type { PolicyStatus } from './control/loop.js';
import { DataDirLock, DataDirLocked, readLockHolder } from './data-dir-lock.js';
import { endBySignal } from './end-by-signal.js';

const USAGE = `usage: couchestor <command> [options]

commands:
  serve                              run the daemon (embedded default: ./couchestor-data)
  volumes list                       list volumes
  volumes create NAME SIZE [--tier hot|warm|cold] [--pool POOL] [--read-only] [--label K=V ...]
  volumes resize NAME SIZE           grow a volume (shrinking is refused)
  volumes migrate NAME TIER [--preserve]
                                     move a volume to hot|warm|cold now, online (--preserve keeps the old copy)
  volumes release NAME               free the old copies preserving migrations kept (stripes; a cold
                                     volume's old file)
  volumes delete NAME [--force]      delete a volume and its data; refused while NBD clients have it open
                                     (--force: disconnect them first, their requests in flight answered)
  pools list                         list pools with usage
  pools replace NAME [--discard-volumes]
                                     a new, empty disk for a dead pool (mounted at its path): gives it the
                                     pool's new identity; a cold pool is rebuilt from parity; a hot/warm
                                     pool whose volumes had data only there is refused unless
                                     --discard-volumes (those volumes then read as I/O errors)
  hardware scan [--json] [--sys-root DIR] [--no-smart]
                                     discover NVMe/SAS/SATA drives, SMART, suggested tier
  status                             control loop: policies, phase, decisions with reasons, migrations
  reconcile [--wait]                 run one control-loop pass now (--wait: until its migrations finish)
  cache stats | drop                 read cache counters per tier; drop every cached stripe
  fsck                               scan every cold pool, check the index against the shard records,
                                     report stripes by state and orphaned records; check every hot/warm
                                     chunk's pool file (pool exists, file exists and reaches the chunk);
                                     count hot/warm volume files no chunk is in (kept copies) and list
                                     those of no volume (orphans; neither is damage, nothing is deleted)
                                     (daemon stopped; exit 1 if any stripe is Degraded or Failed, or any
                                     chunk or volume is unreadable, or an S3 index record is damaged, or
                                     a known pool's directory is missing or unreadable, or the journal's is;
                                     one the configuration no longer names that nothing is on is listed only)
  fsck --quarantine-damaged          first move every damaged S3 index record fsck reports into the
                                     s3-quarantine database (raw bytes kept; prints each), then fsck.
                                     Gives up what those records named (already unreadable): the next
                                     start sweeps their hot files, compaction reclaims their stripes
                                     (daemon stopped)
  fsck --list-quarantine             print the quarantined records, raw bytes in base64 (daemon stopped)
  journal salvage                    drop the cold journal's damaged records that intact records follow (fsck
                                     lists them; the daemon refuses to start while there are any): keeps
                                     every intact record, prints what it dropped (those writes are lost)
                                     (daemon stopped)
  destage                            merge the cold tier's journal into stripes now (needs a running daemon)
  scrub                              verify every cold stripe now and rebuild bad ones (needs a running daemon)
  rebuild <pool>                     rebuild onto a lost/replaced cold pool the shards it no longer holds (needs a
                                     running daemon); exits 3 when the pool is not fully rebuilt (complete: false)
  cold                               cold tier status: policy, journal, stripe states (needs a running daemon)
  compact                            compact cold segment files now: copy live shard records out of mostly-dead
                                     segments, flip the index, delete the old files (needs a running daemon)

common options:
  --data-dir DIR    data directory (default: $COUCHESTOR_DATA_DIR or ./couchestor-data)
serve options:
  --listen HOST     address for NBD and the admin API (default 127.0.0.1)
  --nbd-port N      NBD TCP port (default 10809; 0 = any free port)
  --nbd-socket P    NBD Unix socket (default DATA_DIR/nbd.sock)
  --api-port N      admin API, /healthz and /readyz port (default 8081; 0 = any free port)
  --metrics-port N  Prometheus /metrics port (default 8080; 0 = any free port)
  --preserve        preservation mode: migrations keep the old copy
  --s3-port N       S3 API port (default 9000; 0 = any free port)
SIZE takes bytes or K/M/G/T suffixes (binary): 1G, 512M.`;

class UsageError extends Error {}

/** A command ended by a signal it handles (an offline `volumes migrate`): exit 128 + the signal's number, as a shell reports. */
class Interrupted extends Error {
  constructor(
    message: string,
    readonly signal: NodeJS.Signals,
  ) {
    super(message);
  }
}

function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + (os.constants.signals[sig] ?? 15);
}

async function main(argv: string[]): Promise<number> {
  // The hardware scanner parses its own flags (--json, --sys-root, --no-smart).
  if (argv[0] === 'hardware') {
    if (argv[1] !== 'scan') throw new UsageError('hardware: expected "scan"');
    return runHardwareScanCli(argv.slice(2));
  }
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'data-dir': { type: 'string' },
      listen: { type: 'string' },
      'nbd-port': { type: 'string' },
      'nbd-socket': { type: 'string' },
      'api-port': { type: 'string' },
      'metrics-port': { type: 'string' },
      's3-port': { type: 'string' },
      tier: { type: 'string' },
      pool: { type: 'string' },
      'read-only': { type: 'boolean' },
      preserve: { type: 'boolean' },
      label: { type: 'string', multiple: true },
      wait: { type: 'boolean' },
      json: { type: 'boolean' },
      'quarantine-damaged': { type: 'boolean' },
      'list-quarantine': { type: 'boolean' },
      'discard-volumes': { type: 'boolean' },
      force: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [cmd, sub, ...rest] = positionals;
  if (values.help || !cmd) {
    process.stdout.write(USAGE + '\n');
    return cmd || values.help ? 0 : 2;
  }
  // fsck's flags: silently ignored elsewhere, `serve --quarantine-damaged` started the daemon and
  // `journal salvage --quarantine-damaged` dropped journal records, the operator none the wiser.
  for (const flag of ['quarantine-damaged', 'list-quarantine'] as const) {
    if (values[flag] && cmd !== 'fsck') throw new UsageError(`--${flag} goes with fsck only (couchestor fsck --${flag})`);
  }
  if (values['discard-volumes'] && !(cmd === 'pools' && sub === 'replace')) throw new UsageError('--discard-volumes goes with pools replace only');
  if (values.force && !(cmd === 'volumes' && sub === 'delete')) throw new UsageError('--force goes with volumes delete only');
  const dataDir = values['data-dir'] ?? process.env.COUCHESTOR_DATA_DIR ?? 'couchestor-data';
  switch (cmd) {
    case 'serve':
      await serve(dataDir, (cfg) => {
        if (values.listen) cfg.listenHost = values.listen;
        if (values['nbd-port'] !== undefined) cfg.nbd.port = port(values['nbd-port']);
        if (values['nbd-socket']) cfg.nbd.socketPath = values['nbd-socket'];
        if (values['api-port'] !== undefined) cfg.api.port = port(values['api-port']);
        if (values['metrics-port'] !== undefined) cfg.metrics.port = port(values['metrics-port']);
        if (values.preserve) cfg.control.preservationMode = true;
        if (values['s3-port'] !== undefined) cfg.s3.port = port(values['s3-port']);
      });
      return -1; // keep running
    case 'volumes':
      return volumes(dataDir, sub, rest, values);
    case 'pools':
      if (sub === 'replace') {
        const name = rest[0];
        if (name === undefined || rest.length > 1) throw new UsageError('pools replace: expected one pool name');
        const discardVolumes = values['discard-volumes'] === true;
        // Offline, no cold tier opened (the journal's pool replaced: it refuses to open); a cold
        // pool's rebuild is then the next start's (its interrupted-rebuild record).
        return print(await call(dataDir, 'POST', '/v1/pools/replace', { pool: name, discardVolumes }, (m) => m.replacePool(name, { discardVolumes }), 'pools replace', { coldTier: false }), values.json);
      }
      if (sub !== 'list') throw new UsageError('pools: expected "list" or "replace"');
      return print(await call(dataDir, 'GET', '/v1/pools', undefined, offlinePoolsList, 'pools list'), values.json);
    case 'fsck': {
      if (values['quarantine-damaged'] && values['list-quarantine']) throw new UsageError('fsck: --quarantine-damaged and --list-quarantine do not go together');
      const role = values['quarantine-damaged'] ? 'fsck --quarantine-damaged' : values['list-quarantine'] ? 'fsck --list-quarantine' : 'fsck';
      // The quarantine rewrites the S3 index the daemon serves from and caches; the listing reads it under the same rule.
      const why = values['quarantine-damaged'] ? 'it moves records out of the S3 index the daemon serves from' : 'fsck reads every segment file and must not race with appends';
      if (readDaemonState(dataDir)) throw new Error(`stop the daemon first: ${why}`);
      const lock = lockOffline(dataDir, role, why);
      // No cold tier: fsck must not replay the journal, destage or rebuild while it looks.
      const manager = await openLocked(dataDir, lock, role, { coldTier: false }).catch((err: unknown) => {
        lock.release();
        throw err;
      });
      try {
        if (values['list-quarantine']) {
          print([...listQuarantine(manager.meta)].map((q) => ({ ...q, key: q.key.toString('hex'), quarantinedAt: new Date(q.quarantinedMs).toISOString(), raw: q.raw.toString('base64') })), true);
          return 0;
        }
        if (values['quarantine-damaged']) {
          const moved = await quarantineDamagedRecords(manager.meta, (q) => {
            process.stderr.write(`fsck: quarantined damaged S3 index record (${q.db.replace(/^s3-/, '')}) ${q.record}: ${q.problem} (raw ${q.raw.length} bytes kept; what it named is given up)\n`);
          });
          if (moved === 0) process.stderr.write('fsck: no damaged S3 index record: nothing quarantined, nothing changed\n');
          else process.stderr.write(`fsck: ${moved} record(s) quarantined; the next daemon start frees what they named (hot files swept, cold stripes counted dead for compaction)\n`);
        }
        const report = await fsck(manager, (line) => process.stderr.write(`fsck: ${line}\n`));
        print(report, true);
        return fsckFoundDamage(report) ? 1 : 0;
      } finally {
        await manager.close();
        lock.release();
      }
    }
    case 'journal': {
      if (sub !== 'salvage') throw new UsageError('journal: expected "salvage"');
      if (readDaemonState(dataDir)) throw new Error('stop the daemon first: journal salvage rewrites journal files the daemon appends to');
      const lock = lockOffline(dataDir, 'journal salvage', 'journal salvage rewrites journal files the daemon appends to');
      // No cold tier: opening the journal is what refuses.
      const manager = await openLocked(dataDir, lock, 'journal salvage', { coldTier: false }).catch((err: unknown) => {
        lock.release();
        throw err;
      });
      try {
        const dir = manager.journalDir();
        if (!dir) throw new Error('no hot pool: there is no journal');
        if (!fs.existsSync(dir)) {
          const pool = manager.journalPool()!;
          if (!pool.isOnline()) throw new Error(`pool ${pool.name} holds the cold tier's journal, and its directory ${pool.rec.path} is missing or not writable: nothing to salvage; serve refuses to start without it. Mount its disk`);
          // serve's own rule and words (VolumeManager.refuseLostJournal): throws if it was there before.
          let highest = 0;
          for (const h of manager.highestDestagedSeqSlices(Number.MAX_SAFE_INTEGER)) highest = h;
          manager.refuseLostJournal(pool.name, dir, highest);
          throw new Error(`the cold tier's journal directory ${dir} does not exist yet: nothing to salvage (serve makes it at its first start with a cold tier)`);
        }
        const r = salvageJournalDir(dir);
        for (const d of r.dropped) {
          const what = d.claimed ? ` (header, unverified: volume ${d.claimed.volumeId}, offset ${d.claimed.offsetBytes}, ${d.claimed.lengthBytes} bytes, seq ${d.claimed.seq})` : '';
          process.stderr.write(`journal salvage: dropped ${d.lengthBytes} damaged bytes at offset ${d.offsetBytes} of ${d.file}${what}: that write is lost\n`);
        }
        if (r.dropped.length === 0) process.stderr.write('journal salvage: no damaged record, nothing changed\n');
        print(r, true);
        return 0;
      } finally {
        await manager.close();
        lock.release();
      }
    }
    case 'status': {
      requireDaemon(dataDir);
      const st = await call<{ policies: PolicyStatus[] }>(dataDir, 'GET', '/v1/status', undefined, null, 'status');
      if (values.json) return print(st, true);
      process.stdout.write(formatStatus(st.policies));
      return 0;
    }
    case 'reconcile': {
      requireDaemon(dataDir);
      const st = await call<{ policies: PolicyStatus[] }>(dataDir, 'POST', `/v1/reconcile${values.wait ? '?wait=1' : ''}`, undefined, null, 'reconcile');
      if (values.json) return print(st, true);
      process.stdout.write(formatStatus(st.policies));
      return 0;
    }
    case 'cache': {
      if (sub !== 'stats' && sub !== 'drop') throw new UsageError('cache: expected "stats" or "drop"');
      requireDaemon(dataDir);
      return print(await call(dataDir, sub === 'drop' ? 'POST' : 'GET', sub === 'drop' ? '/v1/cache/drop' : '/v1/cache', undefined, null, `cache ${sub}`), values.json);
    }
    case 'rebuild': {
      if (sub === undefined) throw new UsageError('rebuild: expected a cold pool name');
      requireDaemon(dataDir);
      const report = await call<{ complete?: boolean; notRebuilt?: number; volumesSkipped?: { volume: string; pool: string; stripes: number | null }[] }>(dataDir, 'POST', '/v1/rebuild', { pool: sub }, null, 'rebuild');
      print(report, values.json);
      // A pool not fully rebuilt must not look like success to a script: exit 3 (1 is a failed call).
      if (report.complete === false) {
        const skipped = (report.volumesSkipped ?? []).map((u) => `${u.volume} (on ${u.pool}, ${u.stripes ?? 'unknown'} stripes)`);
        const why = [
          ...(skipped.length > 0 ? [`volumes that cannot be opened were skipped: ${skipped.join(', ')}`] : []),
          ...((report.notRebuilt ?? 0) > 0 ? [`${report.notRebuilt} stripes were not rebuilt`] : []),
        ];
        process.stderr.write(`couchestor: pool ${sub} is not fully rebuilt${why.length > 0 ? `: ${why.join('; ')}` : ''}. Skipped volumes are retried once they open; rebuild again after fixing the cause (couchestor cold lists incompleteRebuilds)\n`);
        return 3;
      }
      return 0;
    }
    case 'destage':
    case 'scrub':
    case 'compact':
    case 'cold': {
      requireDaemon(dataDir);
      const [method, url] = cmd === 'cold' ? ['GET', '/v1/cold'] : ['POST', `/v1/${cmd}`];
      return print(await call(dataDir, method!, url!, undefined, null, cmd), values.json);
    }
    default:
      throw new UsageError(`unknown command ${cmd}`);
  }
}

function port(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`invalid port ${text}`);
  return n;
}

type Manager = Awaited<ReturnType<typeof openManager>>;

const STARTING_ADVICE = 'it is starting or stopping: its API is not up (daemon.json not written), try again once it is ready';

/**
 * Takes the data directory's lock (src/data-dir-lock.ts) for an offline
 * command, or throws DataDirLocked naming the holder: a daemon still starting
 * (daemon.json not written yet, but the index and journal already open) or
 * another offline command. `why` says what racing it would break.
 */
function lockOffline(dataDir: string, role: string, why?: string): DataDirLock {
  // A mistyped --data-dir (or the default ./couchestor-data in the wrong directory) was made into a
  // new data directory (configuration, index, seven pools): `volumes list` then listed none, and
  // fsck on it reported clean. Only serve makes a data directory.
  if (!fs.existsSync(dataDir)) {
    throw new Error(`no data directory at ${path.resolve(dataDir)}: ${role} works on an existing one (check --data-dir or $COUCHESTOR_DATA_DIR; \`couchestor serve\` makes a new one)`);
  }
  const because = why ? ` (${why})` : '';
  return DataDirLock.acquire(dataDir, role, (holder) => (holder === 'serve' ? STARTING_ADVICE : 'wait for it to finish') + because);
}

/** Opens the directory's manager under `lock`, having locked the pools its configuration names as well. */
async function openLocked(dataDir: string, lock: DataDirLock, role: string, opts: { coldTier: boolean }): Promise<Manager> {
  const cfg = loadConfig(dataDir);
  lock.lockPools(poolDirs(cfg), role);
  return openManager(cfg, opts);
}

/**
 * For the commands that only talk to a daemon: throws unless one serves
 * `dataDir`. When none answers yet but the lock is held, says who holds it
 * (a daemon starting) rather than "no daemon". Takes no lock: probing with a
 * lock could make a daemon starting at that moment refuse to start.
 */
function requireDaemon(dataDir: string): void {
  if (readDaemonState(dataDir)) return;
  if (DataDirLock.isHeld(dataDir)) {
    const holder = readLockHolder(dataDir);
    throw new DataDirLocked(path.resolve(dataDir), holder.pid, holder.role, holder.role === 'serve' ? STARTING_ADVICE : 'no daemon is running for this data directory');
  }
  throw new Error('no daemon is running for this data directory');
}

/**
 * Runs a request against the daemon's API, or `direct` against the metadata
 * when no daemon runs, under the data directory's lock (`role`: the command,
 * written into the lock file for the message a refused process prints). A
 * daemon still starting holds the lock: the command is refused, nothing opened.
 * `direct` null: the command needs a daemon (never opens the directory itself).
 */
async function call<T>(dataDir: string, method: string, urlPath: string, body: unknown, direct: ((m: Manager) => Promise<T>) | null, role: string, opts: { coldTier?: boolean } = {}): Promise<T> {
  let st = readDaemonState(dataDir);
  let lock: DataDirLock | null = null;
  if (!st && direct === null) requireDaemon(dataDir); // throws: no daemon serves
  if (!st) {
    try {
      lock = lockOffline(dataDir, role);
    } catch (err) {
      // The daemon may have become ready between the two looks: then its API serves the command.
      st = err instanceof DataDirLocked ? readDaemonState(dataDir) : null;
      if (!st || st.pid !== (err as DataDirLocked).holderPid) throw err;
    }
  }
  if (st) {
    const res = await apiRequest(st.api.host, st.api.port, method, urlPath, body);
    const text = res.text;
    if (res.status < 200 || res.status > 299) throw new Error(apiErrorMessage(method, urlPath, res.status, text));
    return (text ? JSON.parse(text) : undefined) as T;
  }
  try {
    // A read (pools list, volumes list) opens no cold tier: it answers from the index and the
    // pool directories, and must work in the state it diagnoses (the journal's hot pool missing:
    // the cold tier refuses to open, and `pools list` is what tells the operator which disk to mount).
    // A write still opens it, and is refused there with that message.
    const manager = await openLocked(dataDir, lock!, role, { coldTier: opts.coldTier ?? method !== 'GET' });
    try {
      return await direct!(manager);
    } finally {
      await manager.close();
    }
  } finally {
    lock?.release();
  }
}

/**
 * `pools list` with the daemon stopped (no cold tier opened: see call()).
 * A cold pool's usage is counted from its segment files (segmentFilesBytes),
 * as the daemon does at start: the index holds no total, and the in-memory
 * figure is 0 without the cold tier. Unknown (null) for a pool
 * whose directory is missing; each offline pool is named on stderr with
 * what to do.
 */
async function offlinePoolsList(m: Manager): Promise<(PoolRecord & { usedBytes: number | null; online: boolean })[]> {
  const out: (PoolRecord & { usedBytes: number | null; online: boolean })[] = [];
  const journalPool = m.journalPool();
  for (const p of m.pools.values()) {
    const online = p.isOnline();
    let usedBytes: number | null = p.usedBytes;
    if (!online) {
      const holds = p === journalPool ? "it holds the cold tier's journal (writes not yet destaged): the daemon does not start without it" : p.rec.tier === 'cold' ? 'its shards read degraded (or not at all) until it is back' : 'the volume files on it cannot be opened until it is back';
      // One the configuration no longer names (a retired pool: the index keeps every pool's record) may be gone for good.
      const advice = p !== journalPool && m.configuredPools !== null && !m.configuredPools.has(p.name) ? ' (the configuration no longer names it: `couchestor fsck` says whether anything is still on it)' : '. Mount its disk';
      const why = p.offlineButPresent() ? (p.offlineReason() ?? 'its directory is not the pool') : `its directory ${p.rec.path} is missing or not writable`;
      process.stderr.write(`couchestor: pool ${p.name} (${p.rec.tier}) is offline: ${why}; ${holds}${p.offlineButPresent() ? '' : advice}\n`);
      if (p.rec.tier === 'cold') usedBytes = null;
    } else if (p.rec.tier === 'cold') {
      usedBytes = await segmentFilesBytes(path.join(p.rec.path, 'segments'));
    }
    out.push({ ...p.rec, usedBytes, online });
  }
  return out;
}

/**
 * One request to the daemon's admin API, with no client-side time limit.
 * Not fetch(): its HTTP client (undici) gives up after 300 s without
 * response headers, and the API answers a migrate, rebuild, scrub, destage
 * or `reconcile --wait` only when the work is done: a large volume's move
 * (or a pool's rebuild) outlasted it, and the command failed with "fetch
 * failed" while the daemon carried on. A daemon that dies closes the socket
 * (an error here); Ctrl-C stops a wait the operator no longer wants.
 */
function apiRequest(host: string, port: number, method: string, urlPath: string, body: unknown): Promise<{ status: number; text: string }> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    // Settled once: a connection cut mid-answer reports both res 'error' (aborted) and res 'close'.
    let settled = false;
    const fail = (what: string) => {
      if (settled) return;
      settled = true;
      reject(new Error(`the daemon (API ${host}:${port}) gave no answer to ${method} ${urlPath}: ${what}`));
    };
    const cut = 'it closed the connection before its answer was complete (stopped or crashed?)';
    const req = http.request(
      { host, port, method, path: urlPath, headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': payload.length } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (b: Buffer) => parts.push(b));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') });
        });
        res.on('error', () => fail(cut));
        res.on('close', () => {
          if (!res.complete) fail(cut);
        });
      },
    );
    // Before any answer: refused (a daemon stopping), or "socket hang up" (it died holding the request).
    req.on('error', (err: NodeJS.ErrnoException) => fail(err.code === 'ECONNRESET' ? cut : err.message));
    req.end(payload);
  });
}

/**
 * What a failed call prints: the API's `message` (its error handler always
 * sends one), else its `error` (POST /v1/rebuild's 400 carries only that), else
 * the plain-text body, else the status: never an empty "couchestor: ".
 */
function apiErrorMessage(method: string, urlPath: string, status: number, text: string): string {
  let msg = text;
  try {
    const j = JSON.parse(text) as { message?: unknown; error?: unknown } | null;
    const m = typeof j?.message === 'string' && j.message !== '' ? j.message : j?.error;
    if (typeof m === 'string' && m !== '') msg = m;
  } catch {
    /* plain text error */
  }
  return msg.trim() !== '' ? msg : `the daemon answered ${method} ${urlPath} with HTTP ${status} and no message`;
}

/**
 * `volumes migrate` with no daemon: the move runs in this process. Ctrl-C
 * (SIGINT) or SIGTERM aborts it at its next chunk, as a daemon's stop does
 * (stopMigrations: the volume back on its old tier, the chunks moved kept),
 * and the command exits 128 + the signal once the index is closed. Without
 * this the signal killed the process mid-COPY: crash-safe, but the record
 * kept the target tier and the next start's control loop finished the move
 * the operator had cancelled. A second signal ends it at once, by that
 * signal (as after a kill: the next start finishes or undoes the move).
 */
async function migrateOffline(m: Manager, name: string, tier: 'hot' | 'warm' | 'cold', preserve: boolean): Promise<MigrationProgress> {
  let stoppedBy: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stoppedBy !== null) {
      process.stderr.write(`couchestor: second signal (${sig}): exiting now, the move cut where it was; the next start finishes or undoes it\n`);
      // By the signal (130 / 143 as a shell reports it), not process.exit: its wait for LMDB's write thread, in a chunk's flip, could hang for good (end-by-signal.ts).
      endBySignal(sig);
    }
    stoppedBy = sig;
    process.stderr.write(`couchestor: ${sig}: aborting the migration of ${name} at its next chunk (a second signal exits now)\n`);
    void stopMigrations(m, { why: `interrupted (${sig})`, askAgain: '' });
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    return await migrateVolume(m, name, tier, { preserve });
  } catch (err) {
    if (stoppedBy !== null && err instanceof MigrationAborted) throw new Interrupted(err.message, stoppedBy);
    throw err;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
}

async function volumes(dataDir: string, sub: string | undefined, args: string[], values: Record<string, unknown>): Promise<number> {
  switch (sub) {
    case 'list': {
      const list = await call<(VolumeRecord & { error?: string })[]>(dataDir, 'GET', '/v1/volumes', undefined, async (m) => m.listVolumesWithErrors({ readOnly: true }), 'volumes list');
      if (values.json) return print(list, true);
      // A volume that cannot be opened now is listed with why (the column only when one is).
      const errors = list.some((v) => v.error !== undefined);
      const head = ['NAME', 'SIZE_BYTES', 'TIER', 'POOL', 'RO', ...(errors ? ['ERROR'] : [])];
      process.stdout.write(table(head, list.map((v) => [v.name, String(v.sizeBytes), v.tier, v.poolName, v.readOnly ? 'yes' : 'no', ...(errors ? [v.error ?? ''] : [])])));
      return 0;
    }
    case 'create': {
      const [name, size] = args;
      if (!name || !size) throw new UsageError('volumes create NAME SIZE');
      // Checked here, as migrate's: through the daemon the API's schema answered "body/tier must be
      // equal to one of the allowed values", offline "no pool with tier=lukewarm".
      if (values.tier !== undefined && !['hot', 'warm', 'cold'].includes(values.tier as string)) {
        throw new UsageError(`volumes create: --tier must be hot, warm or cold, got ${JSON.stringify(values.tier)}`);
      }
      const body = {
        name,
        sizeBytes: parseSize(size),
        ...(values.tier ? { tier: values.tier as 'hot' | 'warm' | 'cold' } : {}),
        ...(values.pool ? { pool: values.pool as string } : {}),
        ...(values['read-only'] ? { readOnly: true } : {}),
        ...(values.label ? { labels: parseLabels(values.label as string[]) } : {}),
      };
      return print(await call(dataDir, 'POST', '/v1/volumes', body, (m) => m.createVolume(body), 'volumes create'), values.json);
    }
    case 'resize': {
      const [name, size] = args;
      if (!name || !size) throw new UsageError('volumes resize NAME SIZE');
      const sizeBytes = parseSize(size);
      return print(await call(dataDir, 'PATCH', `/v1/volumes/${encodeURIComponent(name)}`, { sizeBytes }, (m) => m.resizeVolume(name, sizeBytes), 'volumes resize'), values.json);
    }
    case 'migrate': {
      const [name, tier] = args;
      if (!name || !tier || !['hot', 'warm', 'cold'].includes(tier)) throw new UsageError('volumes migrate NAME hot|warm|cold [--preserve]');
      const body = { tier: tier as 'hot' | 'warm' | 'cold', preserve: Boolean(values.preserve) };
      return print(await call(dataDir, 'POST', `/v1/volumes/${encodeURIComponent(name)}/migrate`, body, (m) => migrateOffline(m, name, body.tier, body.preserve), 'volumes migrate'), values.json);
    }
    case 'release': {
      const [name] = args;
      if (!name) throw new UsageError('volumes release NAME');
      return print(await call(dataDir, 'POST', `/v1/volumes/${encodeURIComponent(name)}/release`, undefined, (m) => m.releasePreserved(name), 'volumes release'), values.json);
    }
    case 'delete': {
      const [name] = args;
      if (!name) throw new UsageError('volumes delete NAME [--force]');
      // Offline no daemon serves: no client has it open, --force changes nothing.
      const force = values.force === true;
      await call(dataDir, 'DELETE', `/v1/volumes/${encodeURIComponent(name)}${force ? '?force=true' : ''}`, undefined, (m) => m.deleteVolume(name, { force }), 'volumes delete');
      process.stdout.write(`deleted ${name}\n`);
      return 0;
    }
    default:
      throw new UsageError('volumes: expected list, create, resize, migrate, release or delete');
  }
}

function formatStatus(policies: PolicyStatus[]): string {
  if (policies.length === 0) return 'no StoragePolicy loaded\n';
  let out = '';
  for (const p of policies) {
    out += `policy ${p.name}: ${p.phase}${p.reason ? ` (${p.reason})` : ''}  volumes=${p.watchedVolumes} hot=${p.hotVolumes} warm=${p.warmVolumes} cold=${p.coldVolumes}`;
    out += `  migrations active=${p.activeMigrations} succeeded=${p.totalMigrations.succeeded} failed=${p.totalMigrations.failed}  last pass ${p.lastReconcileTime ?? 'never'}\n`;
    for (const c of p.conditions) if (c.status === 'False') out += `  condition ${c.type}=False: ${c.message}\n`;
    if (p.decisions.length) {
      out += table(
        ['  VOLUME', 'TIER', 'TARGET', 'IOPS', 'ACTION', 'REASON'],
        p.decisions.map((d) => ['  ' + d.volume, d.currentTier, d.targetTier ?? '-', d.iops === null ? '-' : String(d.iops), d.action, d.reason]),
      );
    }
  }
  return out;
}

function parseLabels(items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf('=');
    if (i <= 0) throw new UsageError(`label ${JSON.stringify(item)} must be KEY=VALUE`);
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return out;
}

function print(value: unknown, _json: unknown): number {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  return 0;
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n';
  return line(head) + rows.map(line).join('');
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`couchestor: ${err.message}\n`);
    if (err instanceof UsageError) process.stderr.write(USAGE + '\n');
    process.exitCode = err instanceof UsageError ? 2 : err instanceof Interrupted ? signalExitCode(err.signal) : 1;
  },
);
