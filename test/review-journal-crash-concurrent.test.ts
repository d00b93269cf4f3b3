// Review of 7838103 (sync markers judge crash cuts): SIGKILL the daemon 20
// times while two NBD connections (two cold volumes, four requests in flight
// each, writes up to 2 MiB crossing chunk boundaries, so one request is
// several concurrent journal appends) write, zero, trim and flush, with the
// destager running. Every restart must open the journal (a crash cut is
// never judged damage to flushed writes: no JournalCorrupt) and every
// flushed or FUA byte must read back.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { TestDaemon } from './helpers/daemon.js';
import { RawNbd } from './helpers/nbd-client.js';
import { Model, workload, type WorkloadStats } from './helpers/crash-model.js';
import { MiB, createVolume, startColdDaemon } from './helpers/cold.js';

const ROUNDS = Number(process.env.JOURNAL_CRASH_ROUNDS ?? 20);
const VOLUME_BYTES = 8 * MiB;
const VOLUMES = ['ja', 'jb'];
// A small journal destaging from 2 MiB of live records, every 100 ms: files
// rotate, get destaged and removed while the writes go on.
const CONFIG = `demoVolume: null
coldTier:
  journalCapacityBytes: ${8 * MiB}
  destageIntervalMs: 100
  destageThresholdPercent: 25
`;

const daemons: TestDaemon[] = [];
after(async () => {
  for (const d of daemons) await d.cleanup();
});

test('SIGKILL 20 times under concurrent chunk-split writes on two connections: every start opens the journal, every flushed byte reads back', async (t) => {
  let daemon = await startColdDaemon(CONFIG);
  daemons.push(daemon);
  for (const v of VOLUMES) await createVolume(daemon, v, VOLUME_BYTES, 'cold');
  const models = VOLUMES.map(() => new Model(VOLUME_BYTES));
  let acked = 0;
  let flushes = 0;
  let killsWithInflight = 0;
  let startsThatCut = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const stats: WorkloadStats[] = [];
    const running: Promise<void>[] = [];
    for (const [i, v] of VOLUMES.entries()) {
      const c = await RawNbd.connect({ port: daemon.info.nbd.port });
      await c.handshake(v, { structured: round % 2 === 1 });
      const s = { acked: 0, flushes: 0, inflight: 0 };
      stats.push(s);
      running.push(workload(c, models[i]!, s, { workers: 4, maxOpBytes: 2 * MiB }));
    }
    await new Promise((r) => setTimeout(r, 200 + crypto.randomInt(0, 800)));
    if (stats.some((s) => s.inflight > 0)) killsWithInflight++;
    await daemon.kill();
    if (round > 0 && daemon.stderr.includes('dropping torn tail')) startsThatCut++;
    await Promise.all(running);
    for (const s of stats) {
      acked += s.acked;
      flushes += s.flushes;
    }
    // Throws with the daemon's stderr (JournalCorrupt) if it refuses to start.
    daemon = await TestDaemon.start({ dataDir: daemon.dataDir });
    daemons.push(daemon);
    for (const [i, v] of VOLUMES.entries()) {
      const c = await RawNbd.connect({ port: daemon.info.nbd.port });
      await c.handshake(v);
      const r = await c.readAt(0, VOLUME_BYTES);
      assert.equal(r.error, 0);
      const bad = models[i]!.violations(r.data);
      assert.deepEqual(bad, [], `round ${round}, volume ${v}:\n${bad.join('\n')}`);
      assert.equal((await c.flush()).error, 0);
      models[i]!.reset(r.data);
      c.close();
    }
  }
  t.diagnostic(`${acked} ops acknowledged, ${flushes} flushes, ${killsWithInflight} kills with requests in flight, ${startsThatCut} starts cut a torn tail or crash cut`);
  assert.ok(acked > 20 * ROUNDS, `only ${acked} ops were acknowledged`);
  assert.ok(flushes > ROUNDS, `only ${flushes} flushes`);
  assert.ok(killsWithInflight >= ROUNDS - 2, `only ${killsWithInflight} of ${ROUNDS} kills hit requests in flight`);
  await daemon.stop();
});
