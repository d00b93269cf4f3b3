// Review (of b3270fb, openVolume creating a missing volume file and syncing
// its name): a file the index says holds data (Allocated chunks in that
// pool) but that is gone (the pool's disk replaced by an empty one at the
// same path, volumes/ emptied by hand) must not be re-created empty: every
// read of those chunks would then return zeros, no error, and the next
// FLUSH would make that the durable truth. Opening the volume fails with
// PoolOffline naming the file instead; a volume whose file is missing but
// holds no chunk there (made before createVolume created the file) still
// opens, its file created. Fails at 1788fb5 (the volume opened, the flushed
// chunk read back as zeros).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VolumeManager } from '../src/dataplane/volumes/manager.js';
import { PoolOffline } from '../src/dataplane/errors.js';
import type { Volume } from '../src/dataplane/volumes/volume.js';

const MiB = 1024 * 1024;

function readVolume(vol: Volume, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const dst = Buffer.alloc(lengthBytes);
  return new Promise((resolve, reject) => vol.read(offsetBytes, lengthBytes, dst, 0, (err) => (err ? reject(err) : resolve(dst))));
}

test('a volume whose file holding Allocated chunks is gone does not open as zeros', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-review-missing-file-'));
  const dataDir = path.join(dir, 'data');
  let m = VolumeManager.open(dataDir);
  t.after(async () => {
    await m.close().catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await m.putPool({ name: 'hot-0', path: path.join(dir, 'hot-0'), tier: 'hot', capacityBytes: 64 * MiB, labels: { tier: 'hot' } });
  const withData = await m.createVolume({ name: 'full', sizeBytes: 4 * MiB });
  const empty = await m.createVolume({ name: 'empty', sizeBytes: 4 * MiB });
  const vol = m.openVolume('full');
  await new Promise<void>((resolve, reject) => vol.write(MiB, Buffer.alloc(MiB, 0x77), true, (e) => (e ? reject(e) : resolve())));
  await m.close();

  // Both files lost (the pool's volumes/ replaced by an empty directory).
  const pool = path.join(dir, 'hot-0', 'volumes');
  fs.rmSync(pool, { recursive: true });
  fs.mkdirSync(pool);

  m = VolumeManager.open(dataDir);
  let opened: Volume | null = null;
  try {
    opened = m.openVolume('full');
  } catch (err) {
    assert.ok(err instanceof PoolOffline, `expected PoolOffline, got ${(err as Error).name}: ${(err as Error).message}`);
    assert.match((err as Error).message, new RegExp(`${withData.id}`));
  }
  if (opened) {
    const back = await readVolume(opened, MiB, MiB);
    assert.fail(`the volume opened over a re-created empty file: its flushed chunk reads ${back.equals(Buffer.alloc(MiB)) ? 'as zeros' : 'other bytes'}, no error`);
  }
  assert.equal(fs.existsSync(path.join(pool, path.basename(m.pools.get('hot-0')!.volumeFile(withData.id)))), false, 'no empty file was made in its place');

  // No chunk in the lost file: it opens, with a fresh file.
  const e = m.openVolume('empty');
  assert.ok((await readVolume(e, 0, MiB)).equals(Buffer.alloc(MiB)));
  assert.ok(fs.existsSync(m.pools.get('hot-0')!.volumeFile(empty.id)));
});
