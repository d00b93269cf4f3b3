// Review (of 321cf3a, MetaStore.durable() latching the first failed index
// commit until restart): once latched, every later FLUSH that changed the
// chunk map and every S3 PUT fails, so the failure must be visible where an
// operator and Kubernetes look, and clients must be told to go elsewhere,
// not to retry: /healthz and /readyz report it (a restart is the only way
// back: liveness failing is what gets the daemon restarted), and the S3
// front end answers 503 ServiceUnavailable naming it, not 500 "Please try
// again". The commit failure is injected through the root's `flushed`
// thenable, as review-sync-fault cases 7 and 8 do. Fails at b932e72 (both
// probes ok, 500 InternalError).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { healthChecks } from '../src/control/observe.js';
import { toS3Error } from '../src/dataplane/s3/errors.js';
import { failNextIndexCommit, tempManager } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('a latched index commit failure fails /healthz and /readyz and answers S3 503 ServiceUnavailable', async (t) => {
  const { dir, m } = await tempManager(t, 'couchestor-review-meta-latch-', async (d) => VolumeManager.open(path.join(d, 'data')));
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB });
  m.openVolume('v');
  const checks = healthChecks(m, () => true);
  assert.deepEqual(await checks.ready(), { ok: true, reasons: [] });
  assert.deepEqual(await checks.live(), { ok: true, reasons: [] });

  failNextIndexCommit(m.meta);
  const err = await m.meta.durable().then(
    () => assert.fail('durable() resolved over a failed commit'),
    (e: unknown) => e as Error,
  );
  // Latched: a later call with nothing new to commit still rejects.
  await assert.rejects(m.meta.durable());

  const ready = await checks.ready();
  const live = await checks.live();
  assert.equal(ready.ok, false, `/readyz still ok after the index latched a failed commit: ${JSON.stringify(ready)}`);
  assert.match(ready.reasons.join('\n'), /metadata index/);
  assert.equal(live.ok, false, `/healthz still ok though only a restart recovers: ${JSON.stringify(live)}`);
  assert.match(live.reasons.join('\n'), /metadata index/);

  const s3 = toS3Error(err, { bucket: 'b', key: 'k' });
  assert.equal(s3.status, 503, `S3 status for a latched index failure: ${JSON.stringify(s3)}`);
  assert.match(s3.message, /metadata index/);
});
