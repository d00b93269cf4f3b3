// Review of the packed heat samples (heat-samples.ts): a volume's list turned
// to float64 (24 bytes a sample) by a span past the uint32 offsets' 49.7 days
// goes back to offsets (12 bytes) once that span is no longer held. Before, it
// stayed float64 for as long as the daemon ran: a volume idle for 50 days
// (its one sample that old) and then busy held twice the memory the packed
// store claims, and so did every such volume after a restart whose index
// held a sample that old.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HeatTracker } from '../src/control/heat.js';
import type { SampleSeries } from '../src/control/heat-samples.js';
import { openHotManager } from './helpers/volume.js';

const DAY_MS = 86_400_000;

function series(heat: HeatTracker, name: string): SampleSeries {
  return (heat as unknown as { samples: Map<string, SampleSeries> }).samples.get(name)!;
}

test('a volume idle for 50 days and then busy for over its retention holds 12-byte samples again, read as before', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rheat-heat-wide-'));
  const m = await openHotManager(dir);
  try {
    await m.createVolume({ name: 'v', sizeBytes: 1024 * 1024 });
    const vol = m.openVolume('v');
    const heat = new HeatTracker(m, 3_600_000, 1_000);
    const t0 = Date.now() - 60 * DAY_MS;
    heat.sample(t0);
    // 50 days idle (a walk now and then takes no sample), then busy at 1 s ticks.
    const busyMs = t0 + 50 * DAY_MS;
    heat.sample(busyMs);
    vol.counters.readOps += 10;
    heat.tick(busyMs + 1_000);
    assert.equal(series(heat, 'v').wide, true, 'the 50-day span does not fit uint32 ms offsets');
    // 1 h 20 min of ticks: the 50-day-old sample goes with the retention (1 h), the list is thinned past 512 several times.
    for (let k = 2; k <= 4_800; k++) {
      vol.counters.readOps += 10;
      vol.counters.writeOps += k % 2;
      heat.tick(busyMs + k * 1_000);
    }
    const s = series(heat, 'v');
    assert.ok(s.atMs(s.length - 1) - s.atMs(0) < 2 * 3_600_000, 'the old sample has gone');
    assert.equal(s.wide, false, 'back to uint32 offsets once the span fits');
    const nowMs = busyMs + 4_800 * 1_000;
    assert.deepEqual(s.at(s.length - 1), { atMs: nowMs, readOps: 10 + 4_799 * 10, writeOps: 2_399 });
    const r = heat.read('v', 600_000, nowMs);
    assert.ok(r.iops !== null && Math.abs(r.iops - 10.5) < 0.01, `10.5 IOPS over the last 10 min: ${JSON.stringify(r)}`);
  } finally {
    await m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
