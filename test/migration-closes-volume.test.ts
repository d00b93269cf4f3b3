// A move (the control loop's, `volumes migrate`) opened its volume pinned:
// every volume ever moved stayed open until the daemon stopped, a descriptor
// and a chunk map each, and a node whose loop moved each idle volume cold
// once held one per volume again. The move now borrows its volume for its
// run and gives it back at its end (made durable first): nothing else
// holding it, it is closed, and it reads back what was written through the
// next open.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { migrateVolume } from '../src/dataplane/volumes/migration.js';
import { openColdTierManager, readVolume, tempManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;

test('a volume moved hot -> cold -> hot with nothing else holding it is closed after each move, and reads back its bytes', async (t) => {
  const { m } = await tempManager(t, 'couchestor-move-closes-', (dir) => openColdTierManager(dir));
  await m.createVolume({ name: 'v', sizeBytes: 3 * MiB, pool: 'hot-0' });
  const want = crypto.randomBytes(3 * MiB);
  const lent = m.borrowVolume('v');
  await writeVolume(lent, 0, want);
  await lent.flush();
  m.giveBack(lent);
  const isOpen = () => m.openVolumes().some((v) => v.name === 'v');
  assert.equal(isOpen(), false, 'premise: given back, closed');
  for (const to of ['cold', 'hot'] as const) {
    const done = await migrateVolume(m, 'v', to, { preserve: false });
    assert.equal(done.phase, 'Done');
    assert.equal(isOpen(), false, `open after the move to ${to}`);
    assert.equal(m.meta.volumes.get('v')!.tier, to);
    const vol = m.borrowVolume('v');
    assert.ok((await readVolume(vol, 0, 3 * MiB)).equals(want), `bytes read back after the move to ${to}`);
    m.giveBack(vol);
  }
});
