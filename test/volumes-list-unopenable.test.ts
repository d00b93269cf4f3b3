// A volume that cannot be opened (its chunk map names a pool the index does
// not have: a damaged map) is listed by `couchestor volumes list` and
// GET /v1/volumes with why, and every other volume is still listed. Before,
// the listing was the records alone: such a volume looked like any other
// until a client's open of it failed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChunkState, MetaStore } from '../src/dataplane/meta/store.js';
import { TestDaemon, nbdsh } from './helpers/daemon.js';

test('volumes list shows a volume whose chunk map cannot be read with its error, and the other volumes', async (t) => {
  let d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  const apiUrl = () => `http://${d.info.api.host}:${d.info.api.port}/v1/volumes`;
  for (const name of ['a', 'bad', 'c']) {
    const res = await fetch(apiUrl(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, sizeBytes: 4 * 1024 * 1024 }) });
    assert.equal(res.status, 201, await res.text());
  }
  assert.equal(await d.stop(), 0);
  const meta = MetaStore.open(d.dataDir);
  const id = meta.volumes.get('bad')!.id;
  await meta.chunks.put([id, 1], { state: ChunkState.Allocated, pool: 'gone-pool' });
  await meta.durable();
  await meta.close();
  d = await TestDaemon.start({ dataDir: d.dataDir });

  // An NBD client's open of it fails (and is recorded: the failure the listing names).
  assert.throws(() => nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('bad'))})`));
  // The others still open.
  assert.equal(nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('a'))})\nprint(h.get_size())`).trim(), String(4 * 1024 * 1024));

  const json = d.cli('volumes', 'list', '--json');
  assert.equal(json.status, 0, json.stderr);
  const listed = JSON.parse(json.stdout) as { name: string; error?: string; errorPool?: string }[];
  assert.deepEqual(listed.map((v) => v.name), ['a', 'bad', 'c']);
  assert.match(listed[1]!.error ?? '', /gone-pool/);
  assert.equal(listed[1]!.errorPool, 'gone-pool');
  assert.equal(listed[0]!.error, undefined);
  assert.equal(listed[2]!.error, undefined);

  const table = d.cli('volumes', 'list');
  assert.equal(table.status, 0, table.stderr);
  const rows = table.stdout.trim().split('\n');
  assert.match(rows[0]!, /^NAME\s+SIZE_BYTES\s+TIER\s+POOL\s+RO\s+ERROR$/);
  assert.deepEqual(rows.slice(1).map((r) => r.split(/\s+/)[0]), ['a', 'bad', 'c']);
  assert.match(rows[2]!, /gone-pool/);

  const res = await fetch(apiUrl());
  assert.equal(res.status, 200);
  const api = (await res.json()) as { name: string; error?: string }[];
  assert.deepEqual(api.map((v) => [v.name, v.error !== undefined]), [['a', false], ['bad', true], ['c', false]]);
});
