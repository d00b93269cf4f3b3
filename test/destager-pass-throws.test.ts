// A destage pass that throws past its per-chunk catches (here: the journal's
// list of dirty volumes throwing, as a bug there would) is counted and logged;
// the records stay in the journal and the next pass takes them. Before, the
// pass's promise rejected: from kick()'s follow-up pass or the interval timer
// (both `void`) that was an unhandled rejection, which ends the daemon.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openColdTierManager, readVolume, tempManager, writeVolume } from './helpers/volume.js';
import { patternBytes } from './helpers/cold.js';

const MiB = 1024 * 1024;

test('a destage pass that throws is counted, its records kept, and the next pass destages them', async (t) => {
  const { m } = await tempManager(t, 'couchestor-pass-throws-', (dir) => openColdTierManager(dir));
  await m.createVolume({ name: 'v', sizeBytes: 2 * MiB, tier: 'cold' });
  const vol = m.openVolume('v');
  const want = patternBytes(MiB, 7);
  await writeVolume(vol, 0, want);
  await vol.flush();
  const { journal, destager } = m.cold!;
  const dirtyVolumes = journal.dirtyVolumes.bind(journal);
  journal.dirtyVolumes = () => {
    throw new Error('injected: listing dirty volumes failed');
  };
  const errorsBefore = destager.errors;
  try {
    await destager.kick('all'); // rejected before the fix
  } finally {
    journal.dirtyVolumes = dirtyVolumes;
  }
  assert.equal(destager.errors, errorsBefore + 1, 'counted as a destage error');
  assert.match(journal.stalledReason ?? '', /injected/, "the journal's stalled reason names it");
  assert.ok(journal.hasVolume(vol.rec.id), 'the records are still in the journal');
  await destager.drain();
  assert.ok(!journal.hasVolume(vol.rec.id), 'the next pass destaged them');
  assert.ok((await readVolume(vol, 0, MiB)).equals(want));
});
