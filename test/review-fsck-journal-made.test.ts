// Review of 1117d8c (fsck journal.problem). `serve` refuses to start when the
// journal directory is missing on the hot pool the index records it was made
// on (MetaStore.journalMadeOn, refuseLostJournal), whether or not a cold
// volume exists (S3 objects destage through it too). fsck called a missing
// journal/ a problem only while cold volumes exist: with none (hot volumes,
// S3 only), it exited 0 while serve refused. Real daemon, real CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { createVolume, startColdDaemon } from './helpers/cold.js';

test('journal/ missing on its pool, no cold volume: serve refuses, and fsck exits 1 naming it; an empty journal/ made: both go on', async (t) => {
  let d = await startColdDaemon();
  t.after(() => d.cleanup());
  await createVolume(d, 'h1', 4 * 1024 * 1024, 'hot');
  assert.equal(await d.stop(), 0);
  assert.equal(d.cli('fsck').status, 0, 'clean to begin with');
  const journal = path.join(d.dataDir, 'pools', 'hot-0', 'journal');
  assert.ok(fs.existsSync(journal), 'the daemon made the journal');
  fs.rmSync(journal, { recursive: true });

  const started = await TestDaemon.start({ dataDir: d.dataDir }).then(
    (wrongly) => wrongly,
    (err: Error) => err,
  );
  if (started instanceof TestDaemon) await started.cleanup();
  assert.ok(started instanceof Error, 'serve refuses: the journal was made on hot-0 before');
  assert.match(started.message, /journal directory .*journal on pool hot-0 is missing, but the journal was there before/);

  const bad = d.cli('fsck');
  assert.equal(bad.status, 1, `fsck must not say clean while serve refuses:\n${bad.stdout}\n${bad.stderr}`);
  assert.match((JSON.parse(bad.stdout) as { journal: { problem: string | null } }).journal.problem ?? '', /directory .*hot-0\/journal is missing on pool hot-0/);

  // The operator accepts the loss: an empty journal/ (the README's way). fsck and serve go on.
  fs.mkdirSync(journal);
  assert.equal(d.cli('fsck').status, 0);
  d = await TestDaemon.start({ dataDir: d.dataDir });
});
