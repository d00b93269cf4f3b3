// `couchestor volumes list` with the daemon stopped is a read: it makes and
// writes nothing. Since listVolumesWithErrors (1ca344d) it tried to open a
// volume whose file is missing, and that open made the file again (empty:
// no chunk in it), so the listing changed the data directory it was asked
// to show. Now such a volume is judged from its chunk map and files alone:
// one whose missing file holds chunks is listed with why, one whose file
// holds none (an open would make it) without an error, and neither file is made.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon, nbdsh } from './helpers/daemon.js';

test('offline volumes list makes no missing volume file and names the one that holds chunks', async (t) => {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  d.createVolume('empty', '4M');
  d.createVolume('full', '4M');
  nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('full'))})\nh.pwrite(b"x" * 1048576, 0)\nh.flush()`);
  assert.equal(await d.stop(), 0);

  const volumesDir = path.join(d.dataDir, 'pools', 'hot-0', 'volumes');
  const files = fs.readdirSync(volumesDir).sort();
  assert.deepEqual(files, ['1.dat', '2.dat'], 'premise: one file per volume');
  for (const f of files) fs.rmSync(path.join(volumesDir, f));

  const json = d.cli('volumes', 'list', '--json');
  assert.equal(json.status, 0, json.stderr);
  const listed = JSON.parse(json.stdout) as { name: string; error?: string; errorPool?: string }[];
  assert.deepEqual(fs.readdirSync(volumesDir), [], 'the listing made a volume file');
  assert.deepEqual(listed.map((v) => v.name), ['empty', 'full']);
  assert.equal(listed[0]!.error, undefined);
  assert.match(listed[1]!.error ?? '', /volume file .*2\.dat is missing but volume full has chunks in it on pool hot-0/);
  assert.equal(listed[1]!.errorPool, 'hot-0');

  const table = d.cli('volumes', 'list');
  assert.equal(table.status, 0, table.stderr);
  const rows = table.stdout.trim().split('\n');
  assert.match(rows[0]!, /^NAME\s+SIZE_BYTES\s+TIER\s+POOL\s+RO\s+ERROR$/);
  assert.match(rows[2]!, /^full\s.*is missing/);
  assert.deepEqual(fs.readdirSync(volumesDir), [], 'the listing made a volume file');
});
