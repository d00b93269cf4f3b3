// `couchestor fsck` sorts the hot/warm pools' volume files no chunk is in:
// copies kept by preservation mode are counted (`preservedVolumeFiles`), files
// of no volume in the index are listed (`orphanVolumeFiles`, path and size);
// neither is damage (exit 0), and fsck deletes or creates no file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { run } from './helpers/daemon.js';
import { fsckDataDir, MiB, patternBytes, type FsckReport } from './helpers/cold.js';
import { migrate, startWarmDaemon, volumeFile, volumeRecord } from './helpers/hot-warm.js';
import type { TestDaemon } from './helpers/daemon.js';

type VolumeFilesReport = FsckReport & {
  preservedVolumeFiles: number;
  preservedVolumeFileBytes: number;
  orphanVolumeFileCount: number;
  orphanVolumeFileBytes: number;
  orphanVolumeFiles: { path: string; sizeBytes: number }[];
};

const VOLUME_BYTES = 8 * MiB;
const WRITTEN_BYTES = 3 * MiB;

/** Creates hot volume `name` and writes WRITTEN_BYTES of pattern `seed` at offset 0 through nbdcopy. */
function writtenVolume(d: TestDaemon, name: string, seed: number, scratch: string): void {
  d.createVolume(name, String(VOLUME_BYTES), '--tier', 'hot');
  const src = path.join(scratch, `${name}.bin`);
  const model = Buffer.alloc(VOLUME_BYTES);
  patternBytes(WRITTEN_BYTES, seed).copy(model);
  fs.writeFileSync(src, model);
  run('nbdcopy', [src, d.exportUri(name)]);
  fs.rmSync(src);
}

/** Every file (name and size) under each pool's volumes/ directory: what fsck must leave as it found. */
function volumeDirs(dataDir: string): string[] {
  const out: string[] = [];
  for (const pool of fs.readdirSync(path.join(dataDir, 'pools')).sort()) {
    const dir = path.join(dataDir, 'pools', pool, 'volumes');
    if (!fs.existsSync(dir)) continue;
    for (const n of fs.readdirSync(dir).sort()) out.push(`${pool}/${n}:${fs.statSync(path.join(dir, n)).size}`);
  }
  return out;
}

function fsckVolumeFiles(dataDir: string, what: string): { report: VolumeFilesReport; stderr: string } {
  const before = volumeDirs(dataDir);
  const f = fsckDataDir(dataDir);
  assert.equal(f.status, 0, `${what}: fsck exit status (kept copies and orphan files are not damage)\n${f.stdout}\n${f.stderr}`);
  assert.equal(f.report.badChunkCount, 0, `${what}\n${f.stdout}`);
  assert.deepEqual(f.report.badVolumes, []);
  assert.deepEqual(volumeDirs(dataDir), before, `${what}: fsck changed the pools' volume files`);
  return { report: f.report as VolumeFilesReport, stderr: f.stderr };
}

test('fsck: kept copies of preserving moves are counted, not reported; files of no volume are listed as orphans; a clean store reports neither; exit 0', async (t) => {
  const d = await startWarmDaemon();
  const scratch = fs.mkdtempSync('/tmp/couchestor-fsck-vf-');
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(scratch, { recursive: true, force: true });
  });
  writtenVolume(d, 'a', 1, scratch);
  writtenVolume(d, 'b', 2, scratch);
  writtenVolume(d, 'c', 3, scratch);
  // A non-preserving move: its RELEASE deletes the old file, so nothing is left to count.
  await migrate(d, 'c', 'warm');
  const ids = { a: (await volumeRecord(d, 'a')).id, b: (await volumeRecord(d, 'b')).id, c: (await volumeRecord(d, 'c')).id };
  assert.equal(fs.existsSync(volumeFile(d, 'hot-0', ids.c)), false);

  assert.equal(await d.stop(), 0);
  {
    const { report } = fsckVolumeFiles(d.dataDir, 'clean store');
    assert.equal(report.preservedVolumeFiles, 0);
    assert.equal(report.preservedVolumeFileBytes, 0);
    assert.equal(report.orphanVolumeFileCount, 0);
    assert.equal(report.orphanVolumeFileBytes, 0);
    assert.deepEqual(report.orphanVolumeFiles, []);
    assert.equal(report.chunksChecked, 9);
  }

  // Preserving moves: a hot -> warm keeps a's hot-0 file (no chunk in it),
  // a hot -> cold keeps b's (its placement file, every chunk now a stripe).
  const d2 = await startWarmDaemon({ dataDir: d.dataDir });
  let gone: { id: number; bytes: Buffer };
  try {
    await migrate(d2, 'a', 'warm', true);
    await migrate(d2, 'b', 'cold', true);
    assert.equal(fs.statSync(volumeFile(d2, 'hot-0', ids.a)).size, WRITTEN_BYTES);
    assert.equal(fs.statSync(volumeFile(d2, 'hot-0', ids.b)).size, WRITTEN_BYTES);
    // A deleted volume whose unlink a crash lost: its file is put back after the delete.
    writtenVolume(d2, 'gone', 4, scratch);
    const goneId = (await volumeRecord(d2, 'gone')).id;
    gone = { id: goneId, bytes: fs.readFileSync(volumeFile(d2, 'hot-0', goneId)) };
    const del = d2.cli('volumes', 'delete', 'gone');
    assert.equal(del.status, 0, del.stderr);
    assert.equal(fs.existsSync(volumeFile(d2, 'hot-0', goneId)), false);
  } finally {
    assert.equal(await d2.stop(), 0);
  }
  fs.writeFileSync(volumeFile(d2, 'hot-0', gone.id), gone.bytes);
  // A file of an id no volume ever had (made, then a crash before the record), on the warm pool.
  const strayFile = volumeFile(d2, 'warm-0', 9999);
  fs.writeFileSync(strayFile, patternBytes(12_288, 5));
  // Not a volume file name: not ours, not counted.
  fs.writeFileSync(path.join(d.dataDir, 'pools', 'warm-0', 'volumes', 'notes.txt'), 'operator notes\n');

  {
    const { report, stderr } = fsckVolumeFiles(d.dataDir, 'after preserving moves and planted orphans');
    assert.equal(report.preservedVolumeFiles, 2, `preserved files\n${stderr}`);
    assert.equal(report.preservedVolumeFileBytes, 2 * WRITTEN_BYTES);
    assert.equal(report.orphanVolumeFileCount, 2);
    assert.equal(report.orphanVolumeFileBytes, WRITTEN_BYTES + 12_288);
    const orphans = [...report.orphanVolumeFiles].sort((x, y) => x.path.localeCompare(y.path));
    assert.deepEqual(orphans, [
      { path: volumeFile(d, 'hot-0', gone.id), sizeBytes: WRITTEN_BYTES },
      { path: strayFile, sizeBytes: 12_288 },
    ]);
    // Kept files are named per volume, orphans per path.
    assert.match(stderr, /fsck: volume a: pool hot-0 file \(3145728 bytes\) holds no chunk: kept copy/);
    assert.match(stderr, /fsck: volume b: pool hot-0 file \(3145728 bytes\) holds no chunk: kept copy/);
    assert.match(stderr, new RegExp(`fsck: pool warm-0: .*/9999\\.dat \\(12288 bytes\\) belongs to no volume: orphan`));
    // The kept copies do not count as orphans, nor the moved chunks as damage.
    assert.equal(report.chunksChecked, 6, 'a and c: 3 chunks each on warm-0; b: cold');
  }

  // `volumes release` frees exactly what fsck counted as kept; orphans stay (nothing but an operator deletes them).
  const d3 = await startWarmDaemon({ dataDir: d.dataDir });
  try {
    for (const name of ['a', 'b']) {
      const r = d3.cli('volumes', 'release', name);
      assert.equal(r.status, 0, r.stderr);
    }
  } finally {
    assert.equal(await d3.stop(), 0);
  }
  {
    const { report } = fsckVolumeFiles(d.dataDir, 'after volumes release');
    assert.equal(report.preservedVolumeFiles, 0);
    assert.equal(report.orphanVolumeFileCount, 2);
  }
});
