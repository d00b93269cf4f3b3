// A volume's heat survives a daemon restart (SIGTERM, start again on the
// same data directory): the first pass after the start already has a reading
// over the whole samplingWindow, from the samples the daemon kept in its
// index, and classifies each volume as the pass before the restart did. The
// time the daemon was down counts as no I/O. A real NBD client (nbdsh) makes
// the I/O. Before, the samples were in memory only: every volume read
// `no-data` ("heat measured over 0s of a 5s window") for a whole window after
// every restart (a 7 d window on a node restarted weekly: never classified).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nbdsh, type TestDaemon } from './helpers/daemon.js';
import { createVolume, decisionFor, HIGH_IOPS, policyNamed, policyYaml, reconcile, startControlDaemon } from './helpers/control-loop.js';
import type { Decision } from '../src/control/loop.js';

const MiB = 1024 * 1024;
// The restart must take less than the window, or the reading after it is all time down (0 IOPS,
// rightly): a 5 s window failed at load 13-16 where a restart took 7 s. 10 s costs 5 s of reads.
const WINDOW_MS = 10_000;

/** 4 KiB reads of `uri` back to back for `durationMs`, through libnbd; returns how many. */
function readFor(uri: string, durationMs: number): number {
  const script = `
import time
h.connect_uri(${JSON.stringify(uri)})
end = time.monotonic() + ${durationMs / 1000}
n = 0
while time.monotonic() < end:
    h.pread(4096, (n % 2048) * 4096)
    n += 1
h.shutdown()
print(n)
`;
  return Number(nbdsh(script).trim());
}

function summary(d: Decision): string {
  return `${d.action} ${d.currentTier} -> ${d.targetTier} at ${d.iops} IOPS: ${d.reason}`;
}

test('the first pass after a restart reads each volume over its whole window and classifies it as before', async (t) => {
  // Dry run: the decisions are the classification, nothing moves between the passes.
  const policies = { 'tiering.yaml': policyYaml('tiering', { samplingWindow: `${WINDOW_MS / 1000}s`, dryRun: true }) };
  const first = await startControlDaemon({ policies });
  let second: TestDaemon | null = null;
  // One hook, in order: the second daemon stops before the shared data directory goes.
  t.after(async () => {
    await second?.kill();
    await first.cleanup();
  });
  await createVolume(first, 'busy', 8 * MiB);
  await createVolume(first, 'idle', 8 * MiB);
  // A window of I/O on busy (nbdsh's own start comes on top): the samples, from the volumes' creation, cover the window.
  const ops = readFor(first.exportUri('busy'), WINDOW_MS);
  const before = policyNamed(await reconcile(first, false), 'tiering');
  const busyBefore = decisionFor(before, 'busy');
  const idleBefore = decisionFor(before, 'idle');
  assert.ok(busyBefore.iops !== null && busyBefore.iops >= HIGH_IOPS, `busy before the restart (${ops} reads): ${summary(busyBefore)}`);
  assert.equal(`${busyBefore.action} ${busyBefore.targetTier}`, 'stay hot', summary(busyBefore));
  assert.equal(idleBefore.iops, 0, summary(idleBefore));
  assert.equal(`${idleBefore.action} ${idleBefore.targetTier}`, 'would-migrate cold', summary(idleBefore));

  const stoppedAtMs = Date.now();
  assert.equal(await first.stop(), 0);

  const d = (second = await startControlDaemon({ policies, dataDir: first.dataDir }));
  const after = policyNamed(await reconcile(d, false), 'tiering');
  const downMs = Date.now() - stoppedAtMs;
  const busyAfter = decisionFor(after, 'busy');
  const idleAfter = decisionFor(after, 'idle');
  assert.notEqual(busyAfter.iops, null, `busy after the restart (${downMs} ms down): ${summary(busyAfter)}`);
  assert.equal(`${busyAfter.action} ${busyAfter.targetTier}`, 'stay hot', `${downMs} ms down: ${summary(busyAfter)}`);
  // The time down is no I/O: the reading is the share of the window before the stop, never more.
  assert.ok(busyAfter.iops! <= busyBefore.iops! * 1.05, `after ${busyAfter.iops} IOPS, before ${busyBefore.iops}`);
  assert.equal(idleAfter.iops, 0, summary(idleAfter));
  assert.equal(`${idleAfter.action} ${idleAfter.targetTier}`, 'would-migrate cold', summary(idleAfter));
});
