// couchestor_journal_spare_bytes on a real daemon's /metrics: the bytes of
// the journal's spare files (destaged files kept for reuse, counted in the
// journal capacity), equal to what lies on disk as journal-spare-*.log, 0
// before any file was destaged, and the adopted spares' after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_JOURNAL_FILE_BYTES } from '../src/dataplane/journal/journal.js';
import { TestDaemon, run } from './helpers/daemon.js';
import { MiB, coldStatus, createVolume, destage, patternBytes, startColdDaemon } from './helpers/cold.js';

/** More than one journal file: the first rotates out, and once destaged is kept as a spare. */
const WRITE_BYTES = DEFAULT_JOURNAL_FILE_BYTES + 8 * MiB;

async function metric(d: TestDaemon, name: string): Promise<{ value: number | undefined; text: string }> {
  const res = await fetch(`http://${d.info.metrics.host}:${d.info.metrics.port}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return { value: m ? Number(m[1]) : undefined, text };
}

/** Bytes of the journal-spare-*.log files under the daemon's data directory (the hot pool's journal). */
function spareBytesOnDisk(dataDir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const rel of fs.readdirSync(dataDir, { recursive: true }) as string[]) {
    if (!/^journal-spare-.*\.log$/.test(path.basename(rel))) continue;
    files++;
    bytes += fs.statSync(path.join(dataDir, rel)).size;
  }
  return { files, bytes };
}

/** Polls /metrics until the gauge equals the spare bytes on disk (a spare is renamed in off the write path). */
async function gaugeMatchesDisk(d: TestDaemon, deadlineMs = 30_000): Promise<{ files: number; bytes: number }> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const disk = spareBytesOnDisk(d.dataDir);
    const { value } = await metric(d, 'couchestor_journal_spare_bytes');
    if (value === disk.bytes && disk.bytes === spareBytesOnDisk(d.dataDir).bytes) return disk;
    if (Date.now() > until) assert.fail(`couchestor_journal_spare_bytes ${value} never matched the ${disk.files} spare files on disk (${disk.bytes} bytes)`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('couchestor_journal_spare_bytes on /metrics is the bytes of the journal spare files on disk, before and after a destage and across a restart', async (t) => {
  let d = await startColdDaemon();
  t.after(() => d.cleanup());
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-spare-metric-'));
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));

  const first = await metric(d, 'couchestor_journal_spare_bytes');
  assert.match(first.text, /^# HELP couchestor_journal_spare_bytes \S.*$/m);
  assert.match(first.text, /^# TYPE couchestor_journal_spare_bytes gauge$/m);
  assert.equal(first.value, 0, 'no spare before any file was destaged');

  await createVolume(d, 'c', WRITE_BYTES, 'cold');
  const src = path.join(work, 'src.bin');
  fs.writeFileSync(src, patternBytes(WRITE_BYTES, 0x5a4e));
  run('nbdcopy', [src, d.exportUri('c')]);
  assert.ok((await coldStatus(d)).journalBytes >= WRITE_BYTES, 'the writes are in the journal');
  assert.equal((await metric(d, 'couchestor_journal_spare_bytes')).value, 0, 'nothing destaged yet: no spare');

  await destage(d);
  const spared = await gaugeMatchesDisk(d);
  assert.ok(spared.files >= 1 && spared.bytes >= DEFAULT_JOURNAL_FILE_BYTES / 2, `the destaged file was kept as a spare (${spared.files} files, ${spared.bytes} bytes)`);
  // Beside the live bytes it is counted with: the destage left none.
  assert.equal((await metric(d, 'couchestor_journal_bytes')).value, 0);

  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  // The open adopts the spares left on disk (its new head may take one).
  await gaugeMatchesDisk(d);
});
