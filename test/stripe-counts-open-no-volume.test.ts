// The stripe counts (couchestor_stripes at each /metrics scrape, GET /v1/cold,
// the Kubernetes ErasureCodingPolicy status at each control-loop pass) came
// from Reconstructor.counts(), which opened every volume to read its cold
// chunks: each volume's file stayed open for good (10,001 volumes: 10,044
// descriptors; past the 20,000 limit every open fails EMFILE) and the first
// scrape held the event loop for seconds. Now they come from the index and
// the open volumes: a scrape opens no volume file, and the figures stay exact
// as chunks are destaged and volumes deleted, before and after a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TestDaemon, run } from './helpers/daemon.js';
import { MiB, allHealthy, coldStatus, createVolume, destage, patternBytes, startColdDaemon } from './helpers/cold.js';
import { metric, scrape } from './helpers/control-loop.js';
import { RawNbd } from './helpers/nbd-client.js';

/** Empty cold volumes beside the ones written: each one opened holds its file's descriptor. */
const EMPTY_VOLUMES = 60;

/** The daemon's descriptors on volume files (pools/<pool>/volumes/...), read from /proc. */
function volumeFilesOpen(d: TestDaemon): number {
  const dir = `/proc/${d.info.pid}/fd`;
  let n = 0;
  for (const fd of fs.readdirSync(dir)) {
    let target: string;
    try {
      target = fs.readlinkSync(path.join(dir, fd));
    } catch {
      continue; // closed meanwhile
    }
    if (target.startsWith(path.join(fs.realpathSync(d.dataDir), 'pools') + path.sep) && target.includes(`${path.sep}volumes${path.sep}`)) n++;
  }
  return n;
}

/** DELETE /v1/volumes/NAME; `force`: with a client attached (it is disconnected first). */
async function deleteVolume(d: TestDaemon, name: string, force = false): Promise<void> {
  const res = await fetch(`http://${d.info.api.host}:${d.info.api.port}/v1/volumes/${name}${force ? '?force=true' : ''}`, { method: 'DELETE' });
  assert.ok(res.ok, `DELETE ${name}: ${res.status} ${await res.text()}`);
}

/** The healthy-stripe figure of /metrics and of GET /v1/cold, after which no volume file may be open beyond `openBefore`. */
async function assertCounts(d: TestDaemon, stripes: number, openBefore: number, what: string): Promise<void> {
  assert.equal(metric(await scrape(d), 'couchestor_stripes', { state: 'healthy' }), stripes, `${what}: /metrics healthy stripes`);
  assert.deepEqual((await coldStatus(d)).stripes, allHealthy(stripes), `${what}: GET /v1/cold stripes`);
  assert.equal(volumeFilesOpen(d), openBefore, `${what}: the scrape and the status call opened no volume file`);
}

test('a metrics scrape and GET /v1/cold open no volume, and their stripe counts stay exact', async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stripe-counts-'));
  let d = await startColdDaemon();
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  const write = async (name: string, sizeBytes: number, seed: number) => {
    await createVolume(d, name, sizeBytes, 'cold');
    fs.writeFileSync(path.join(work, 'src.bin'), patternBytes(sizeBytes, seed));
    run('nbdcopy', [path.join(work, 'src.bin'), d.exportUri(name)]);
  };
  // 3 + 2 chunks of 1 MiB, destaged: 5 stripes; and empty cold volumes.
  await write('a', 3 * MiB, 1);
  await write('b', 2 * MiB, 2);
  await destage(d);
  for (let i = 0; i < EMPTY_VOLUMES; i++) await createVolume(d, `e${i}`, 4 * MiB, 'cold');
  await assertCounts(d, 5, volumeFilesOpen(d), 'written');

  // A restart: no volume is open; the figures come from the index.
  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  assert.equal(volumeFilesOpen(d), 0, 'premise: no volume open after the restart');
  await assertCounts(d, 5, 0, 'after a restart');
  await assertCounts(d, 5, 0, 'a second scrape');

  // A volume opened and written (its figure from memory now), one deleted (closed: from the index before).
  await write('c', 4 * MiB, 3);
  // A client holds c (a volume closes once nothing holds it): open through the counts and its delete.
  const holder = await RawNbd.connect({ path: d.info.nbd.socketPath });
  t.after(() => holder.close());
  await holder.handshake('c');
  await destage(d);
  const open = volumeFilesOpen(d);
  assert.equal(open, 1, 'premise: c is open');
  await assertCounts(d, 9, open, 'c destaged');
  await deleteVolume(d, 'a');
  await assertCounts(d, 6, open, 'a deleted');
  // Held by the client: a plain delete is refused now (409), --force disconnects it.
  await deleteVolume(d, 'c', true);
  await assertCounts(d, 2, 0, 'c deleted');
  assert.equal(await d.stop(), 0);
  d = await TestDaemon.start({ dataDir: d.dataDir });
  await assertCounts(d, 2, 0, 'after a second restart');
});
