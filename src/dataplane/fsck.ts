// `couchestor fsck`: scans every cold pool's segment files (the shard
// records are self-describing), checks the index against them, and reports
// stripes by state plus records no stripe references (orphans: superseded
// generations, a stripe half-written when the daemon died, or copies and
// sources of a segment compaction cut short; none is an error: the next
// compaction pass reclaims them). Volume chunk maps and cold S3 objects and
// parts are the index. Hot/warm chunks are checked against the pool files the
// index places them in (up to MAX_VOLUME_FILES per volume since moves between
// pools): the pool must exist, and its file must exist and reach the chunk.
// Each hot/warm pool's volumes/ directory is listed too: a file of a volume
// that no chunk is in is a copy kept by preservation mode when the volume
// record says so (or has no say: an older record), else a leftover of a
// RELEASE a kill cut short, which the next daemon start finishes (both
// counted, not damage); a file of no volume in the index is an orphan
// (listed, not damage). Damaged S3 object and part records are reported
// (damage); those `--quarantine-damaged` moved out (objects/quarantine.ts)
// are counted, not damage. Every pool the index knows must have a readable,
// writable directory (a disk not mounted: damage, named with what it holds; the
// journal's pool is why `serve` refuses to start), and the journal's pool
// its journal/ directory once one was made there (serve's rule). One taken out of the
// configuration that nothing the index knows is on any more is listed
// (retiredPools), not damage: the index keeps every pool's record.
import fs from 'node:fs';
import path from 'node:path';
import { ChunkState } from './meta/store.js';
import type { VolumeManager } from './volumes/manager.js';
import { SegmentStore } from './ec/segment-store.js';
import type { StripeRef } from './ec/stripe-store.js';
import { ALL_OBJECT_KEYS, OBJECTS_DB, PARTS_DB, UPLOADS_DB, coldStripeRefs } from './objects/cold-segments.js';
import { describeRecord, listQuarantine, readStoredRecord, readUploadDamage } from './objects/quarantine.js';
import { checkJournalDir, type JournalFileDamage } from './journal/journal.js';

export type FsckStripeState = 'Healthy' | 'Degraded' | 'Failed';

export interface FsckReport {
  poolsScanned: number;
  poolsOffline: string[];
  recordsScanned: number;
  corruptRecords: number;
  tornTails: number;
  stripes: Record<FsckStripeState, number>;
  /** Index entries pointing at records that are missing or belong to another stripe. */
  badShards: { volume: string; chunkIndex: number; shardIndex: number; pool: string; reason: string }[];
  orphanRecords: number;
  orphanBytes: number;
  /** Old stripes kept by preserving migrations (counted in `stripes` too, and referenced: not orphans). */
  preservedStripes: number;
  /** Orphans of a generation newer than the index's: a destage interrupted before its index flip. */
  halfWrittenStripes: number;
  /** Volumes whose placement pool (the record's poolName) does not exist: the volume cannot be opened. */
  badVolumes: { volume: string; pool: string; reason: string }[];
  /** Allocated (hot/warm) chunk entries checked against their pool's volume file. */
  chunksChecked: number;
  /** Allocated chunks whose bytes are not where the index says: all of them, `badChunks` lists the first MAX_BAD_CHUNKS_LISTED. */
  badChunkCount: number;
  badChunks: { volume: string; chunkIndex: number; pool: string; reason: string }[];
  /**
   * Volume files (hot/warm pools' volumes/<id>.dat) of an existing volume that
   * the volume does not use (no Allocated chunk is in it and it is not the
   * placement pool's, or it is a cold volume's placement file that still has
   * bytes) and that its record lists as kept by preservation mode
   * (keptFilePools), or whose record predates that list (an older daemon's
   * kept copy and a RELEASE it left are indistinguishable: counted here).
   * `volumes release NAME` deletes them (a cold volume's: truncates), a later
   * move onto that pool empties them. Not damage and not orphans; not read
   * by the volume.
   */
  preservedVolumeFiles: number;
  preservedVolumeFileBytes: number;
  /**
   * Such files the record does not list as kept: a move's RELEASE that a
   * kill cut short (after its last SWITCH). The next daemon start deletes
   * them (a cold volume's: truncates). Not damage (no chunk is in them).
   */
  leftoverVolumeFiles: number;
  leftoverVolumeFileBytes: number;
  /**
   * Volume files whose id no volume in the index has: a deleted volume whose
   * unlink a crash lost. Nothing reads them and nothing reclaims them (ids
   * are never reused); not damage (no data is lost), like orphan records. All
   * counted, the first MAX_ORPHAN_FILES_LISTED listed.
   */
  /**
   * Volumes deleted whose chunk map and files the daemon is still removing
   * (a "deleting" mark: VolumeManager.deleteVolume returns once the volume
   * is out of the namespace; a mark a stop or crash left is finished at the
   * next start). Not damage: their entries are not checked, the records
   * they name are not orphans, their files not orphan files.
   */
  deletingVolumes: { volume: string; id: number; chunkEntriesLeft: number }[];
  orphanVolumeFileCount: number;
  orphanVolumeFileBytes: number;
  orphanVolumeFiles: { path: string; sizeBytes: number }[];
  /**
   * The cold tier's journal: damaged records with intact records after them
   * (not a torn tail; the daemon refuses to start until `couchestor journal
   * salvage`). A torn tail is not damage (its writes were never flushed);
   * a clean stop ends the last file with an end marker and leaves none, so
   * one means the daemon did not stop cleanly (crash, SIGKILL, power cut).
   */
  journal: {
    filesScanned: number;
    recordsScanned: number;
    tornTails: number;
    damaged: JournalFileDamage[];
    /**
     * Why the journal could not be scanned, else null: its pool
     * (VolumeManager.journalPool) is unreachable (also in unreachablePools), or the pool is
     * there but its journal/ directory, made there before (the index's
     * record, serve's rule), is not (writes not yet destaged are gone from
     * it: a replaced or wiped disk; `serve` refuses to start). Damage.
     */
    problem: string | null;
  };
  /**
   * Pools the index knows whose directory is missing, not a directory, not
   * readable, or not writable (a disk not mounted, dead, or remounted
   * read-only: the daemon takes such a pool offline): what is on them cannot
   * be read, and they are not scanned. `holds` says what that means (the
   * journal's pool: `serve` refuses to start). Damage until it is back.
   */
  unreachablePools: { pool: string; tier: string; path: string; problem: string; holds: string }[];
  /**
   * Pools whose directory is missing or unreadable too, but that the
   * configuration no longer names and that nothing the index knows is on:
   * no volume placed on it or with chunks in it, no stripe shard, no S3 hot
   * segment, not the journal's pool (a dead cold pool taken out of
   * couchestor.yaml and rebuilt away; the index keeps every pool's record).
   * Not damage.
   */
  retiredPools: { pool: string; tier: string; path: string; problem: string }[];
  /**
   * S3 object and part records of a shape their stripes cannot be read from
   * (cold-holders.ts recordDamage): "bucket/key" (a part: its upload and
   * number) and what is wrong; the first MAX_BAD_SHARDS_LISTED, all counted
   * in damagedRecordCount. Damage: the stripes they held are not checked
   * (their shard records count as orphans) and the object cannot be read.
   * Also multipart upload records damaged (quarantine.ts uploadDamage:
   * "bucket/key upload ID"): the upload cannot be listed, completed or aborted.
   */
  damagedRecordCount: number;
  damagedRecords: { db: 'objects' | 'parts' | 'uploads'; record: string; problem: string }[];
  /**
   * Damaged records `couchestor fsck --quarantine-damaged` moved out of the
   * index (objects/quarantine.ts): not damage (no longer in the index; what
   * they named was given up), all counted, the first MAX_BAD_SHARDS_LISTED
   * listed with their raw record's length (the raw bytes stay in the
   * s3-quarantine database).
   */
  quarantinedRecordCount: number;
  quarantinedRecords: { db: string; record: string; problem: string; quarantinedAt: string; rawBytes: number }[];
}

/** Whether the report shows damage (`couchestor fsck` exits 1): lost or unreachable data, not orphans nor kept copies. */
export function fsckFoundDamage(r: FsckReport): boolean {
  return (
    r.stripes.Failed > 0 ||
    r.stripes.Degraded > 0 ||
    r.badChunkCount > 0 ||
    r.badVolumes.length > 0 ||
    r.journal.damaged.length > 0 ||
    r.journal.problem !== null ||
    r.unreachablePools.length > 0 ||
    r.damagedRecordCount > 0
  );
}

/** Keys a record by where it is, so index entries can be matched exactly. */
function locKey(pool: string, segment: number, offsetBytes: number): string {
  return `${pool}/${segment}/${offsetBytes}`;
}

interface ScannedRecord {
  owner: string;
  chunkIndex: number;
  generation: number;
  shardIndex: number;
  lengthBytes: number;
}

const MAX_BAD_SHARDS_LISTED = 1000;
const MAX_BAD_CHUNKS_LISTED = 1000;
const MAX_ORPHAN_FILES_LISTED = 1000;

export async function fsck(manager: VolumeManager, progress: (line: string) => void): Promise<FsckReport> {
  const report: FsckReport = {
    poolsScanned: 0,
    poolsOffline: [],
    recordsScanned: 0,
    corruptRecords: 0,
    tornTails: 0,
    stripes: { Healthy: 0, Degraded: 0, Failed: 0 },
    badShards: [],
    orphanRecords: 0,
    orphanBytes: 0,
    halfWrittenStripes: 0,
    preservedStripes: 0,
    badVolumes: [],
    chunksChecked: 0,
    badChunkCount: 0,
    badChunks: [],
    preservedVolumeFiles: 0,
    preservedVolumeFileBytes: 0,
    leftoverVolumeFiles: 0,
    leftoverVolumeFileBytes: 0,
    deletingVolumes: [],
    orphanVolumeFileCount: 0,
    orphanVolumeFileBytes: 0,
    orphanVolumeFiles: [],
    journal: { filesScanned: 0, recordsScanned: 0, tornTails: 0, damaged: [], problem: null },
    unreachablePools: [],
    retiredPools: [],
    damagedRecordCount: 0,
    damagedRecords: [],
    quarantinedRecordCount: 0,
    quarantinedRecords: [],
  };
  // Pools something the index knows is on (volumes, stripe shards, S3 hot segments): an unreachable
  // one the configuration no longer names is damage only if it is in here (or holds the journal).
  const inUse = new Set<string>();
  const unreachable = checkPoolDirs(manager, report, progress, inUse);
  const journalPool = manager.journalPool();
  const journalDir = manager.journalDir();
  if (journalPool && unreachable.has(journalPool.name)) {
    report.journal.problem = `its pool ${journalPool.name} is unreachable (${unreachable.get(journalPool.name)}): not scanned`;
  } else if (journalDir && !fs.existsSync(journalDir) && journalExisted(manager, journalPool!.name)) {
    // serve's rule (VolumeManager.refuseLostJournal): made there before, so missing now is a lost journal.
    report.journal.problem = `directory ${journalDir} is missing on pool ${journalPool!.name}, and cold volumes write through it: it was there before, and its acknowledged writes not yet destaged are gone if its disk was replaced or wiped (is the right disk mounted?); serve refuses to start (an empty journal/ made there accepts the loss)`;
    progress(`journal: ${report.journal.problem}`);
  } else if (journalDir && manager.missingJournalFiles(journalPool!.name, journalDir)?.acceptedLoss === false) {
    // serve's rule (VolumeManager.refuseMissingJournalFiles): files the index recorded, not yet destaged, are gone.
    report.journal.problem = manager.missingJournalFiles(journalPool!.name, journalDir)!.problem;
    progress(`journal: ${report.journal.problem}`);
  } else if (journalDir) {
    report.journal = { ...checkJournalDir(journalDir), problem: null };
    for (const d of report.journal.damaged) {
      progress(`journal ${d.file}: damaged record at byte offset ${d.offsetBytes} (${d.lengthBytes} bytes), ${d.intactRecordsAfter} intact record(s) after it; \`couchestor journal salvage\` drops it`);
    }
    if (report.journal.tornTails > 0) {
      progress(`journal: ${report.journal.tornTails} file(s) with a torn tail: the daemon did not stop cleanly; the next start cuts it, dropping only writes no FLUSH covered`);
    }
  }
  checkVolumeFiles(manager, report, progress);
  scanVolumeDirs(manager, report, progress);
  const records = new Map<string, ScannedRecord>();
  const cold = [...manager.pools.values()].filter((p) => p.rec.tier === 'cold');
  for (const pool of cold) {
    const dir = path.join(pool.rec.path, 'segments');
    if (unreachable.has(pool.name) || !pool.isOnline() || !fs.existsSync(dir)) {
      report.poolsOffline.push(pool.name);
      progress(`pool ${pool.name}: offline or empty, skipped`);
      continue;
    }
    const store = await SegmentStore.open(dir, { readOnly: true });
    let n = 0;
    let lastReportMs = Date.now();
    try {
      for await (const e of store.scan()) {
        if (e.kind === 'record') {
          const h = e.header;
          records.set(locKey(pool.name, e.location.segment, e.location.offsetBytes), {
            owner: h.ownerId.toString('hex'),
            chunkIndex: h.chunkIndex,
            generation: h.stripeGeneration,
            shardIndex: h.shardIndex,
            lengthBytes: e.location.lengthBytes,
          });
          n++;
        } else if (e.kind === 'corrupt') report.corruptRecords++;
        else report.tornTails++;
        if (Date.now() - lastReportMs > 1000) {
          progress(`pool ${pool.name}: ${n} records scanned`);
          lastReportMs = Date.now();
        }
      }
    } finally {
      await store.close();
    }
    report.recordsScanned += n;
    report.poolsScanned++;
    progress(`pool ${pool.name}: ${n} records`);
  }

  const referenced = new Set<string>();
  const indexedGen = new Map<string, number>();
  const check = (holder: string, chunkIndex: number, ref: StripeRef) => {
    const stripeKey = `${ref.ownerId}/${chunkIndex}`;
    indexedGen.set(stripeKey, Math.max(indexedGen.get(stripeKey) ?? 0, ref.generation));
    let bad = 0;
    ref.shards.forEach((s, i) => {
      inUse.add(s.pool);
      const key = locKey(s.pool, s.segment, s.offsetBytes);
      const rec = records.get(key);
      let reason: string | null = null;
      if (!rec) reason = 'no valid record at this location';
      else if (rec.owner !== ref.ownerId || rec.chunkIndex !== chunkIndex || rec.generation !== ref.generation || rec.shardIndex !== i) {
        reason = `location holds another record (chunk ${rec.chunkIndex}, generation ${rec.generation}, shard ${rec.shardIndex})`;
      }
      if (reason) {
        bad++;
        if (report.badShards.length < MAX_BAD_SHARDS_LISTED) report.badShards.push({ volume: holder, chunkIndex, shardIndex: i, pool: s.pool, reason });
      } else referenced.add(key);
    });
    report.stripes[bad === 0 ? 'Healthy' : bad <= ref.parityShards ? 'Degraded' : 'Failed']++;
  };
  for (const vol of manager.listVolumes()) {
    for (const { chunkIndex, entry } of manager.meta.volumeChunks(vol.id)) {
      if (entry.state === ChunkState.Cold && entry.stripe) check(vol.name, chunkIndex, entry.stripe);
      if (entry.preserved) {
        report.preservedStripes++;
        check(vol.name, chunkIndex, entry.preserved);
      }
    }
  }
  // Being deleted: what their entries name is neither checked nor an orphan (the daemon frees it batch by batch).
  for (const rec of manager.meta.listDeletingVolumes()) {
    let left = 0;
    for (const { entry } of manager.meta.volumeChunks(rec.id)) {
      left++;
      for (const ref of [entry.state === ChunkState.Cold ? entry.stripe : undefined, entry.preserved]) {
        for (const s of ref?.shards ?? []) referenced.add(locKey(s.pool, s.segment, s.offsetBytes));
      }
    }
    report.deletingVolumes.push({ volume: rec.name, id: rec.id, chunkEntriesLeft: left });
    progress(`volume ${rec.name} (id ${rec.id}) is being deleted: ${left} chunk entries left (the daemon removes them in the background)`);
  }
  // Cold S3 objects and multipart parts: `volume` names them "s3:<index key, hex>".
  const objects = manager.meta.openDB<{ segments: { kind: string }[] }, Buffer>(OBJECTS_DB);
  const parts = manager.meta.openDB<{ segment: { kind: string } }, Buffer>(PARTS_DB);
  // A damaged record is reported and skipped: one must not stop the check of every other.
  const damaged = (db: 'objects' | 'parts' | 'uploads', key: Buffer, problem: string | null): boolean => {
    if (problem === null) return false;
    report.damagedRecordCount++;
    const record = describeRecord(manager.meta, `s3-${db}`, key);
    if (report.damagedRecords.length < MAX_BAD_SHARDS_LISTED) report.damagedRecords.push({ db, record, problem });
    progress(`damaged S3 index record (${db}) ${record}: ${problem}`);
    return true;
  };
  // Keys, each record decoded on its own (readStoredRecord): a range read of the values threw at a
  // record whose bytes do not decode, and fsck died with no report.
  for (const key of objects.getKeys({ ...ALL_OBJECT_KEYS })) {
    const k = Buffer.from(key);
    const { value, problem } = readStoredRecord(objects, k, 'segments');
    if (damaged('objects', k, problem)) continue;
    for (const seg of value!.segments as { kind: string; pool?: string }[]) if (seg.kind === 'hot' && seg.pool) inUse.add(seg.pool);
    for (const ref of coldStripeRefs(value!.segments)) check(`s3:${k.toString('hex')}`, ref.chunkIndex, ref);
  }
  for (const key of parts.getKeys({ ...ALL_OBJECT_KEYS })) {
    const k = Buffer.from(key);
    const { value, problem } = readStoredRecord(parts, k, 'segment');
    if (damaged('parts', k, problem)) continue;
    const seg = value!.segment as { kind: string; pool?: string };
    if (seg.kind === 'hot' && seg.pool) inUse.add(seg.pool);
    for (const ref of coldStripeRefs([value!.segment])) check(`s3:${k.toString('hex')}`, ref.chunkIndex, ref);
  }
  // Multipart upload records (quarantine.ts uploadDamage): one damaged made its bucket's ListMultipartUploads 500.
  const uploads = manager.meta.openDB<unknown, Buffer>(UPLOADS_DB);
  for (const key of uploads.getKeys({ ...ALL_OBJECT_KEYS })) {
    const k = Buffer.from(key);
    damaged('uploads', k, readUploadDamage(uploads, k));
  }
  for (const q of listQuarantine(manager.meta)) {
    report.quarantinedRecordCount++;
    if (report.quarantinedRecords.length < MAX_BAD_SHARDS_LISTED) {
      report.quarantinedRecords.push({ db: q.db, record: q.record, problem: q.problem, quarantinedAt: new Date(q.quarantinedMs).toISOString(), rawBytes: q.raw.length });
    }
  }
  if (report.quarantinedRecordCount > 0) progress(`${report.quarantinedRecordCount} quarantined S3 index record(s) (raw bytes kept in the s3-quarantine database; not damage)`);

  const halfWritten = new Set<string>();
  for (const [key, rec] of records) {
    if (referenced.has(key)) continue;
    report.orphanRecords++;
    report.orphanBytes += rec.lengthBytes;
    const stripeKey = `${rec.owner}/${rec.chunkIndex}`;
    const gen = indexedGen.get(stripeKey) ?? 0;
    if (rec.generation > gen) halfWritten.add(`${stripeKey}/${rec.generation}`);
  }
  report.halfWrittenStripes = halfWritten.size;
  const journalPoolName = manager.journalPool()?.name;
  const retired = (u: FsckReport['unreachablePools'][number]) => u.pool !== journalPoolName && manager.configuredPools !== null && !manager.configuredPools.has(u.pool) && !inUse.has(u.pool);
  for (const u of report.unreachablePools) {
    if (retired(u)) {
      report.retiredPools.push({ pool: u.pool, tier: u.tier, path: u.path, problem: u.problem });
      progress(`pool ${u.pool} (${u.tier}) at ${u.path}: ${u.problem}; the configuration no longer names it and nothing the index knows is on it: not damage`);
    } else if (u.pool !== journalPoolName && manager.configuredPools !== null && !manager.configuredPools.has(u.pool)) {
      progress(`pool ${u.pool} (${u.tier}) at ${u.path}: ${u.problem} (the configuration no longer names it); it holds ${u.holds}`);
    }
  }
  report.unreachablePools = report.unreachablePools.filter((u) => !retired(u));
  return report;
}

/**
 * Whether the cold tier's journal directory was made on `pool` before, by
 * serve's rule (VolumeManager.refuseLostJournal): the index records it
 * (markJournalMade, every start with a cold tier), or, an index from before
 * that record with none, a cold volume exists. Missing then, serve refuses
 * to start, whether or not a cold volume exists (S3 writes go through it too).
 */
function journalExisted(manager: VolumeManager, pool: string): boolean {
  return manager.meta.journalMadeOn(pool) || (!manager.meta.journalMadeOn() && manager.listVolumes().some((v) => v.tier === 'cold'));
}

/**
 * Every pool the index knows: its directory must be a directory fsck can
 * read (readdir), and write, as the daemon's Pool.isOnline asks. One that is
 * not is reported with what it holds; returns their names and problems.
 * Read-only (stat, access): nothing is made.
 */
function checkPoolDirs(manager: VolumeManager, report: FsckReport, progress: (line: string) => void, inUse: Set<string>): Map<string, string> {
  const out = new Map<string, string>();
  const journalPool = manager.journalPool();
  for (const pool of manager.pools.values()) {
    const dir = pool.rec.path;
    let problem: string | null = null;
    try {
      if (!fs.statSync(dir).isDirectory()) problem = 'not a directory';
      else fs.accessSync(dir, fs.constants.R_OK | fs.constants.X_OK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problem = code === 'ENOENT' ? 'directory missing' : `directory not readable (${(err as Error).message})`;
    }
    // The daemon takes a pool it cannot write offline (Pool.isOnline: a file system remounted
    // read-only after a disk error): its volumes do not open, and the journal's stops serve.
    if (problem === null && pool.offlineButPresent()) problem = `not the pool: ${pool.offlineReason() ?? 'its identity does not match'}`;
    if (problem === null && !pool.isOnline()) problem = 'directory not writable (a read-only file system?): the daemon takes the pool offline';
    if (problem === null) continue;
    out.set(pool.name, problem);
    const volumes = manager
      .listVolumes()
      .filter((v) => v.poolName === pool.name || [...manager.meta.volumeChunks(v.id)].some(({ entry }) => entry.state === ChunkState.Allocated && entry.pool === pool.name))
      .map((v) => v.name);
    if (volumes.length > 0) inUse.add(pool.name);
    // Volumes placed on it or with chunks in its files (the hot/warm data of those is unreachable).
    const files = volumes.length > 0 ? `the volume files of ${volumes.join(', ')}` : 'no volume file the index knows of';
    const holds =
      pool === journalPool
        ? `the cold tier's journal: its acknowledged writes not yet destaged are unreachable until its disk is mounted (serve refuses to start); and ${files}`
        : pool.rec.tier === 'cold'
          ? `shards of cold stripes: they read degraded (or not at all) until its disk is mounted (a replaced disk: mount it, make the directory empty and run \`couchestor pools replace ${pool.name}\`)`
          : `${files}, until its disk is mounted`;
    report.unreachablePools.push({ pool: pool.name, tier: pool.rec.tier, path: dir, problem, holds });
    // One the configuration no longer names is told at the end, once what is on it is known (retiredPools).
    if (pool === journalPool || manager.configuredPools === null || manager.configuredPools.has(pool.name)) progress(`pool ${pool.name} (${pool.rec.tier}) at ${dir}: ${problem}; it holds ${holds}`);
  }
  return out;
}

/** What stat says of one volume file: its length, or why the chunks placed in it cannot be read. */
type FileCheck = { sizeBytes: number } | { problem: string };

function statVolumeFile(file: string): FileCheck {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return { problem: `pool file ${file} is not a regular file` };
    return { sizeBytes: st.size };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { problem: code === 'ENOENT' ? `pool file ${file} is missing` : `pool file ${file} cannot be read (${(err as Error).message})` };
  }
}

/**
 * Hot/warm chunks: every Allocated entry names the pool whose file holds it
 * (chunk i at offset i * chunkSize). Reported: a pool that does not exist, a
 * file that is missing, a file that ends before the chunk's first byte. Not
 * reported: a file that ends inside the chunk (a thin volume's last chunk
 * partly written: the rest reads as zeros), files no chunk is in (sorted by
 * scanVolumeDirs). Reads the index only:
 * opening the volumes would create missing files.
 */
function checkVolumeFiles(manager: VolumeManager, report: FsckReport, progress: (line: string) => void): void {
  for (const vol of manager.listVolumes()) {
    if (!manager.pools.has(vol.poolName)) {
      const reason = `placement pool ${vol.poolName} does not exist: the volume cannot be opened`;
      report.badVolumes.push({ volume: vol.name, pool: vol.poolName, reason });
      progress(`volume ${vol.name}: ${reason}`);
    }
    const files = new Map<string, FileCheck>();
    // Per pool: bad chunks and the first one's reason, for one progress line each.
    const bad = new Map<string, { count: number; firstChunk: number; reason: string }>();
    let checked = 0;
    for (const { chunkIndex, entry } of manager.meta.volumeChunks(vol.id)) {
      if (entry.state !== ChunkState.Allocated) continue;
      checked++;
      let reason: string | null = null;
      const pool = manager.pools.get(entry.pool);
      if (!pool) reason = `the index places this chunk on pool ${JSON.stringify(entry.pool)}, which does not exist`;
      else {
        let f = files.get(pool.name);
        if (f === undefined) files.set(pool.name, (f = statVolumeFile(pool.volumeFile(vol.id))));
        const chunkStartBytes = chunkIndex * vol.chunkSizeBytes;
        if ('problem' in f) reason = f.problem;
        else if (f.sizeBytes <= chunkStartBytes) {
          reason = `pool file ${pool.volumeFile(vol.id)} is ${f.sizeBytes} bytes: it ends before this chunk (bytes ${chunkStartBytes}..${chunkStartBytes + vol.chunkSizeBytes})`;
        }
      }
      if (reason === null) continue;
      report.badChunkCount++;
      if (report.badChunks.length < MAX_BAD_CHUNKS_LISTED) report.badChunks.push({ volume: vol.name, chunkIndex, pool: entry.pool, reason });
      const b = bad.get(entry.pool);
      if (b) b.count++;
      else bad.set(entry.pool, { count: 1, firstChunk: chunkIndex, reason });
    }
    report.chunksChecked += checked;
    for (const [pool, b] of bad) {
      progress(`volume ${vol.name}: ${b.count} chunk(s) on pool ${pool} unreadable, first chunk ${b.firstChunk}: ${b.reason}`);
    }
    if (checked > 0 && bad.size === 0) progress(`volume ${vol.name}: ${checked} chunks in ${files.size} pool file(s)`);
  }
}

/** Volume file names a pool's volumes/ directory holds (Pool.volumeFile). */
const VOLUME_FILE_RE = /^([1-9][0-9]*)\.dat$/;

/**
 * Lists every hot/warm pool's volumes/ directory and sorts the files no
 * chunk is in: a known volume's, kept (`preservedVolumeFiles`) or left by a
 * RELEASE cut short (`leftoverVolumeFiles`), or no known volume's
 * (`orphanVolumeFiles`). Read-only: readdir and stat, no open.
 * Other names in volumes/ are not ours and are left alone; a pool whose
 * directory is missing has no files to sort (its chunks, if any, are
 * reported by checkVolumeFiles).
 */
function scanVolumeDirs(manager: VolumeManager, report: FsckReport, progress: (line: string) => void): void {
  const volumes = new Map(manager.listVolumes().map((v) => [v.id, v]));
  const deleting = new Set(manager.meta.listDeletingVolumes().map((v) => v.id));
  // Pools (by name) each volume's Allocated chunks are in, from the index.
  const used = new Map<number, Set<string>>();
  for (const v of volumes.values()) {
    const pools = new Set<string>();
    for (const { entry } of manager.meta.volumeChunks(v.id)) if (entry.state === ChunkState.Allocated) pools.add(entry.pool);
    used.set(v.id, pools);
  }
  for (const pool of manager.pools.values()) {
    if (pool.rec.tier === 'cold') continue;
    let names: string[];
    try {
      names = fs.readdirSync(pool.volumesDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    for (const name of names) {
      const m = VOLUME_FILE_RE.exec(name);
      if (!m) continue;
      const file = path.join(pool.volumesDir, name);
      const st = fs.lstatSync(file, { throwIfNoEntry: false });
      if (!st || !st.isFile()) continue;
      const vol = volumes.get(Number(m[1]));
      if (!vol && deleting.has(Number(m[1]))) {
        progress(`pool ${pool.name}: ${file} (${st.size} bytes) belongs to a volume being deleted (the daemon removes it)`);
        continue;
      }
      if (!vol) {
        report.orphanVolumeFileCount++;
        report.orphanVolumeFileBytes += st.size;
        if (report.orphanVolumeFiles.length < MAX_ORPHAN_FILES_LISTED) report.orphanVolumeFiles.push({ path: file, sizeBytes: st.size });
        progress(`pool ${pool.name}: ${file} (${st.size} bytes) belongs to no volume: orphan`);
        continue;
      }
      if (used.get(vol.id)!.has(pool.name)) continue;
      // The placement pool's file is opened by the volume (and holds new
      // chunks) whatever is in it; only a cold volume's can be a kept copy.
      if (pool.name === vol.poolName && (vol.tier !== 'cold' || st.size === 0)) continue;
      if (vol.keptFilePools !== undefined && !vol.keptFilePools.includes(pool.name)) {
        report.leftoverVolumeFiles++;
        report.leftoverVolumeFileBytes += st.size;
        progress(`volume ${vol.name}: pool ${pool.name} file (${st.size} bytes) holds no chunk and is not kept: left by a RELEASE cut short (the next daemon start frees it)`);
        continue;
      }
      report.preservedVolumeFiles++;
      report.preservedVolumeFileBytes += st.size;
      progress(`volume ${vol.name}: pool ${pool.name} file (${st.size} bytes) holds no chunk: kept copy (\`volumes release ${vol.name}\` frees it)`);
    }
  }
}
