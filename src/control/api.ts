// The daemon's admin HTTP API (volumes and pools), used by the `couchestor`
// CLI while a daemon runs. Storage errors map to HTTP statuses here only.
import type { SegmentCompactor } from '../dataplane/ec/compaction.js';
import { PoolRebuildBusy, UnknownPool } from '../dataplane/ec/reconstruction.js';
import Fastify, { type FastifyInstance } from 'fastify';
import { AlreadyExists, DestageStalled, InvalidArgument, MigrationInProgress, NoSpace, NoSuitablePool, NotFound, PoolOffline, TooFewOnlinePools, VolumeInUse } from '../dataplane/errors.js';
import type { VolumeManager } from '../dataplane/volumes/manager.js';
import { MigrationAborted, migrateVolume } from '../dataplane/volumes/migration.js';
import type { Tier } from '../dataplane/meta/store.js';
import type { ControlLoop } from './loop.js';
import type { CacheManager } from '../dataplane/cache/index.js';

export function httpStatusFor(err: unknown): number {
  if (err instanceof InvalidArgument) return 400;
  if (err instanceof NotFound) return 404;
  if (err instanceof AlreadyExists || err instanceof MigrationInProgress || err instanceof VolumeInUse) return 409;
  // A move aborted (or refused) because the daemon is stopping (stopMigrations): 409, as the rebuild's
  // "the daemon is stopping" (PoolRebuildBusy) is; the message says to ask again once it is back.
  if (err instanceof MigrationAborted) return 409;
  // Before NoSuitablePool (its base class): too few pools online is an availability problem, not "no space".
  if (err instanceof TooFewOnlinePools) return 503;
  if (err instanceof NoSuitablePool || err instanceof NoSpace) return 507;
  // Temporary: the pools are back (mounted) or the cause is fixed, and the call succeeds; a destage's records wait in the journal.
  if (err instanceof PoolOffline || err instanceof DestageStalled) return 503;
  return 500;
}

const volumeBody = {
  type: 'object',
  required: ['name', 'sizeBytes'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 128 },
    // No minimum here: createVolume's check names the range (the schema's said "body/sizeBytes must be >= 1").
    sizeBytes: { type: 'integer' },
    tier: { type: 'string', enum: ['hot', 'warm', 'cold'] },
    pool: { type: 'string' },
    readOnly: { type: 'boolean' },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
  },
} as const;

export function buildApi(
  manager: VolumeManager,
  loop: ControlLoop | null = null,
  cache: CacheManager | null = null,
  app: FastifyInstance = Fastify({ bodyLimit: 64 * 1024 }),
): FastifyInstance {
  // A request still running when the daemon shuts down (a migrate, scrub or
  // rebuild) is answered, but on a keep-alive connection the socket would
  // then idle until the keep-alive timeout (72 s) before close() returns:
  // answers sent while closing carry Connection: close.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_req, reply) => {
    if (closing) reply.header('connection', 'close');
  });
  app.setErrorHandler((err, _req, reply) => {
    const e = err as Error & { statusCode?: number; validation?: { params?: { allowedValues?: unknown } }[] };
    const status = e.validation ? 400 : (e.statusCode ?? httpStatusFor(err));
    // "must be equal to one of the allowed values" says which ones (hot, warm, cold).
    const allowed = e.validation?.[0]?.params?.allowedValues;
    const message = Array.isArray(allowed) ? `${e.message}: ${allowed.map((v) => JSON.stringify(v)).join(', ')}` : e.message;
    reply.code(status).send({ error: e.name, message });
  });
  const requireCold = () => {
    if (!manager.cold) throw new NotFound('the cold tier is not running');
    return manager.cold;
  };
  app.get('/v1/pools', async () =>
    [...manager.pools.values()].map((p) => ({ ...p.rec, usedBytes: p.usedBytes, online: p.isOnline() })),
  );
  // Every volume; one that cannot be opened now with `error` and `errorPool` (tried a slice at a time: no big map read holds the loop).
  app.get('/v1/volumes', async () => manager.listVolumesWithErrors());
  app.get<{ Params: { name: string } }>('/v1/volumes/:name', async (req) => {
    const rec = manager.getVolumeRecord(req.params.name);
    if (!rec) throw new NotFound(`no volume named ${req.params.name}`);
    return rec;
  });
  app.post<{ Body: { name: string; sizeBytes: number; tier?: 'hot' | 'warm' | 'cold'; pool?: string; readOnly?: boolean; labels?: Record<string, string> } }>(
    '/v1/volumes',
    { schema: { body: volumeBody } },
    async (req, reply) => {
      const rec = await manager.createVolume(req.body);
      reply.code(201);
      return rec;
    },
  );
  app.patch<{ Params: { name: string }; Body: { sizeBytes: number } }>(
    '/v1/volumes/:name',
    // No minimum: resizeVolume's check names the range, as createVolume's does (the schema said "body/sizeBytes must be >= 1").
    { schema: { body: { type: 'object', required: ['sizeBytes'], additionalProperties: false, properties: { sizeBytes: { type: 'integer' } } } } },
    async (req) => manager.resizeVolume(req.params.name, req.body.sizeBytes),
  );
  // Moves a volume to another tier now (online); returns when done. A stop of the daemon aborts it at its
  // next chunk (the volume stays on its old tier): 409 with "the daemon is stopping".
  app.post<{ Params: { name: string }; Body: { tier: Tier; preserve?: boolean } }>(
    '/v1/volumes/:name/migrate',
    { schema: { body: { type: 'object', required: ['tier'], additionalProperties: false, properties: { tier: { type: 'string', enum: ['hot', 'warm', 'cold'] }, preserve: { type: 'boolean' } } } } },
    async (req) => {
      // A volume a delete has taken (a forced one waits up to 10 s for its clients): refused as its resize
      // is, not answered Done and then gone.
      if (manager.isBeingDeleted(req.params.name)) throw new VolumeInUse(`volume ${req.params.name} is being deleted`, req.params.name, []);
      return migrateVolume(manager, req.params.name, req.body.tier, { preserve: req.body.preserve ?? false });
    },
  );
  // Frees what preserving migrations kept for the volume (old stripes; a cold volume's old file).
  app.post<{ Params: { name: string } }>('/v1/volumes/:name/release', async (req) => manager.releasePreserved(req.params.name));
  app.get('/v1/cache', async () => {
    if (!cache) throw new NotFound('the read cache is off');
    return cache.stats();
  });
  // Drops every cached stripe (L1 and L2), like drop_caches: the next reads go to the shards.
  app.post('/v1/cache/drop', async () => {
    if (!cache) throw new NotFound('the read cache is off');
    return { dropped: cache.invalidatePrefix('stripe/') };
  });
  app.get('/v1/status', async () => ({ policies: loop?.status() ?? [], activeMigrations: loop?.activeMigrations() ?? 0, totals: loop?.totals }));
  // Runs one control-loop pass now; with ?wait=1 also waits for the migrations it started.
  // wait is 0 or 1: another value (wait=true) was answered at once, not waiting, as if 0: a 400 now.
  app.post<{ Querystring: { wait?: '0' | '1' } }>(
    '/v1/reconcile',
    { schema: { querystring: { type: 'object', additionalProperties: false, properties: { wait: { type: 'string', enum: ['0', '1'] } } } } },
    async (req) => {
      if (!loop) throw new NotFound('the control loop is not running');
      await loop.reconcile();
      if (req.query.wait === '1') await loop.settle();
      return { policies: loop.status() };
    },
  );
  // Merges every journaled write into stripes now; returns when done.
  app.post('/v1/destage', async () => {
    const cold = requireCold();
    await cold.destager.drain();
    return { journalBytes: cold.journal.bytesLive, ...cold.stripes.counters };
  });
  app.get('/v1/cold', async () => {
    const cold = requireCold();
    return {
      policy: cold.policy,
      journalBytes: cold.journal.bytesLive,
      ...cold.stripes.counters,
      stripes: cold.reconstructor.counts(),
      // Volumes whose stripes the counts leave out: they cannot be opened (pool offline, EIO).
      unavailableVolumes: await manager.unavailableVolumesAsync(),
      unhealthy: cold.reconstructor.unhealthy().slice(0, 100),
      lastScrub: cold.reconstructor.lastScrub,
      // Pools whose last rebuild skipped volumes that could not be opened: not fully rebuilt yet.
      incompleteRebuilds: cold.reconstructor.incompleteRebuilds(),
      // The pool rebuild running now (the list above changes only when it ends), and an operator's queued behind the timer's.
      rebuilding: cold.reconstructor.rebuildRunning(),
    };
  });
  // Verifies every stripe now and rebuilds what is bad; returns when done.
  app.post('/v1/scrub', async () => {
    const cold = requireCold();
    const report = await cold.reconstructor.scrub();
    return { ...report, stripes: cold.reconstructor.counts(), unavailableVolumes: await manager.unavailableVolumesAsync() };
  });
  // Rebuilds onto a lost/replaced cold pool the shards it no longer holds (k survivors read per stripe); returns when durable.
  // 200 with complete: false and volumesSkipped when volumes that cannot be opened were skipped (the others are rebuilt).
  app.post<{ Body: { pool?: string } }>('/v1/rebuild', async (req, reply) => {
    const cold = requireCold();
    const pool = req.body?.pool;
    if (typeof pool !== 'string' || pool === '') return reply.code(400).send({ error: 'body must be {"pool": "<cold pool name>"}' });
    try {
      const report = await cold.reconstructor.rebuildPool(pool);
      return { ...report, stripes: cold.reconstructor.counts(), unavailableVolumes: await manager.unavailableVolumesAsync() };
    } catch (err) {
      // `message` is what the couchestor command prints for a failed call.
      if (err instanceof UnknownPool) return reply.code(404).send({ error: err.name, message: err.message });
      if (err instanceof PoolRebuildBusy) return reply.code(409).send({ error: err.name, message: err.message });
      throw err;
    }
  });
  // `couchestor pools replace`: a new, empty disk for a dead pool (VolumeManager.replacePool); a cold one is rebuilt before the answer.
  app.post<{ Body: { pool?: string; discardVolumes?: boolean } }>('/v1/pools/replace', async (req, reply) => {
    const pool = req.body?.pool;
    if (typeof pool !== 'string' || pool === '' || (req.body.discardVolumes !== undefined && typeof req.body.discardVolumes !== 'boolean')) {
      return reply.code(400).send({ error: 'InvalidArgument', message: 'body must be {"pool": "<pool name>", "discardVolumes"?: boolean}' });
    }
    const replaced = await manager.replacePool(pool, { discardVolumes: req.body.discardVolumes === true });
    const cold = manager.cold;
    if (replaced.tier !== 'cold' || cold === null) return replaced;
    const report = await cold.reconstructor.rebuildPool(pool);
    return { ...replaced, rebuild: report, stripes: cold.reconstructor.counts() };
  });
  // Refused (409, VolumeInUse, with the NBD clients' count and addresses) while NBD clients have the
  // volume open; ?force=true disconnects them first (their requests in flight answered) and deletes.
  app.delete<{ Params: { name: string }; Querystring: { force?: 'true' | 'false' } }>(
    '/v1/volumes/:name',
    { schema: { querystring: { type: 'object', additionalProperties: false, properties: { force: { type: 'string', enum: ['true', 'false'] } } } } },
    async (req, reply) => {
      try {
        await manager.deleteVolume(req.params.name, { force: req.query.force === 'true', background: true });
      } catch (err) {
        if (err instanceof VolumeInUse) return reply.code(409).send({ error: err.name, message: err.message, volume: err.volume, nbdClients: err.nbdClients.length, peers: err.nbdClients });
        throw err;
      }
      reply.code(204);
    },
  );
  return app;
}

/**
 * GET /v1/compaction: segment compaction counters and every cold segment's
 * size and dead bytes; POST /v1/compact: one pass now, unthrottled, returns
 * what it reclaimed (`couchestor compact`). `stopping`: whether the daemon's
 * stop has begun. The stop ends a pass after its current batch
 * (SegmentCompactor.stop(), its first step); the pass the request ran is
 * then answered 409, "the daemon is stopping", not 200 with a part of the
 * work passed off as the whole, and one asked for afterwards is not started
 * (409).
 */
export function registerCompactionRoutes(app: FastifyInstance, compactor: SegmentCompactor, stopping: () => boolean = () => false): void {
  app.get('/v1/compaction', async () => ({ ...compactor.stats(), segments: await compactor.segments() }));
  app.post('/v1/compact', async (_req, reply) => {
    // Asked for once the stop has begun (the compactor stopped with it): no pass starts.
    if (stopping()) {
      return reply.code(409).send({ error: 'DaemonStopping', message: 'the daemon is stopping: no compaction pass was started; run `couchestor compact` again once the daemon is back' });
    }
    const report = await compactor.runOnce({ unthrottled: true });
    if (stopping()) {
      return reply.code(409).send({
        error: 'DaemonStopping',
        message:
          `the daemon is stopping: the compaction pass ended after its current batch (${report.segmentsCompacted} segments compacted, ${report.reclaimedBytes} bytes reclaimed); ` +
          'nothing is lost (the copies it had made are reclaimed by a later pass); run `couchestor compact` again once the daemon is back',
      });
    }
    return { ...report, ...compactor.stats() };
  });
}
