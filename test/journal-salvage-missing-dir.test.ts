// `couchestor journal salvage` with the cold tier's journal directory missing.
// Before, it printed "no damaged record, nothing changed" and exited 0, while
// serve refuses to start in that state (daemon-missing-journal-dir.test.ts):
// an operator checking the journal was told all was well. Now it exits 1 with
// serve's own words (VolumeManager.refuseLostJournal): the directory, that
// serve refuses, and the two ways out. It makes nothing (no empty journal/).
// The real CLI on a real daemon's data dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { MiB } from './helpers/cold.js';
import { coldVolumeWithWork } from './helpers/missing-pool.js';

test('journal salvage: a missing journal directory (or its pool) is an error naming it and what to do, not "nothing changed"', async (t) => {
  const { d, work } = await coldVolumeWithWork(t, 'salvage-missing-journal-', 4 * MiB, 4 * MiB, 0x5a1);
  assert.equal(await d.stop(), 0);
  const hot0 = path.join(d.dataDir, 'pools', 'hot-0');
  const journal = path.join(hot0, 'journal');

  const intact = d.cli('journal', 'salvage');
  assert.equal(intact.status, 0, intact.stderr);
  assert.match(intact.stderr, /no damaged record, nothing changed/);

  fs.renameSync(journal, path.join(work, 'journal.away'));
  const lost = d.cli('journal', 'salvage');
  assert.equal(lost.status, 1, `exit status (stderr: ${lost.stderr})`);
  assert.doesNotMatch(lost.stderr, /nothing changed/);
  assert.ok(lost.stderr.includes(`the cold tier's journal directory ${journal} on pool hot-0 is missing, but the journal was there before`), lost.stderr);
  assert.match(lost.stderr, /Mount or restore the disk that holds it and start again; or, accepting the loss of those writes .*make an empty directory .*: serve then starts with an empty journal/);
  assert.equal(fs.existsSync(journal), false, 'salvage made no journal directory');

  fs.renameSync(hot0, path.join(work, 'hot-0.away'));
  const offline = d.cli('journal', 'salvage');
  assert.equal(offline.status, 1, `exit status (stderr: ${offline.stderr})`);
  assert.doesNotMatch(offline.stderr, /nothing changed/);
  assert.ok(offline.stderr.includes(`pool hot-0 holds the cold tier's journal, and its directory ${hot0} is missing or not writable`), offline.stderr);
  assert.match(offline.stderr, /serve refuses to start without it\. Mount its disk/);
  assert.equal(fs.existsSync(hot0), false, 'salvage made no pool directory');
});
