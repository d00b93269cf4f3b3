// On Kubernetes a start waits up to kubernetes.startSyncTimeoutMs (30 s by
// default) for the apiserver's first list of the ErasureCodingPolicies. A
// pod deleted meanwhile (SIGTERM) must end that wait at once: exit 143 with
// the line naming the step, the informers' hung requests not waited for,
// the cold data all there at the next start. Before, the SIGTERM killed the
// process there (no handler yet), or, as PID 1 in the pod, was ignored until
// the grace period's SIGKILL.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startKube, type KubeEnv } from './helpers/kube.js';
import { access, applyCrds } from './helpers/kube-manifests.js';
import { spawnServe, type TestDaemon } from './helpers/daemon.js';
import { createVolume, nbdcopyIn, nbdcopyOut, randomFile } from './helpers/control-loop.js';
import { apiserverPid, Cluster, ECP, startKubeDaemon } from './helpers/kube-daemon.js';

const MiB = 1024 * 1024;
let kube: KubeEnv;
const daemons: TestDaemon[] = [];

before(async () => {
  kube = await startKube();
  await applyCrds(access(kube));
  await new Cluster(kube).create(ECP, 'ErasureCodingPolicy', 'ec21', { dataShards: 2, parityShards: 1 });
});

after(async () => {
  for (const d of daemons) await d.cleanup();
  await kube?.stop();
});

test('SIGTERM while the start waits 30 s for a hung apiserver (SIGSTOP): exit 143 within 5 s naming the step; the next start reads the cold data back', { timeout: 180_000 }, async () => {
  const opts = { kubeconfig: kube.kubeconfig(), nodeName: 'node-stop', startSyncTimeoutMs: 30_000 };
  let d = await startKubeDaemon(opts);
  daemons.push(d);
  await createVolume(d, 'cv', 4 * MiB, { tier: 'cold' });
  const src = path.join(d.dataDir, 'cold.bin');
  randomFile(src, 2 * MiB);
  nbdcopyIn(src, d.exportUri('cv')); // left in the journal: the next start replays it
  assert.equal(await d.stop(), 0);

  const pid = apiserverPid(kube.server);
  process.kill(pid, 'SIGSTOP');
  try {
    const s = spawnServe(d.dataDir, { env: { COUCHESTOR_TEST_START_STEPS: '1' } });
    await s.line(/^couchestor start-step the cold tier policy$/);
    const sentMs = performance.now();
    s.proc.kill('SIGTERM');
    const out = await s.exited;
    const elapsedMs = out.atMs - sentMs;
    assert.equal(out.signal, null, `exited by itself, not killed:\n${out.stderr}`);
    assert.equal(out.code, 143, out.stderr);
    assert.match(out.stderr, /^couchestor: stopped \(SIGTERM\) during start-up at the cold tier policy; what it had opened is closed$/m);
    assert.ok(elapsedMs < 5_000, `exit ${elapsedMs.toFixed(0)} ms after SIGTERM (the wait is 30 s)`);
    process.stdout.write(`# SIGTERM to exit: ${elapsedMs.toFixed(0)} ms\n`);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  d = await startKubeDaemon({ ...opts, dataDir: d.dataDir });
  daemons.push(d);
  assert.ok(nbdcopyOut(d.exportUri('cv'), path.join(d.dataDir, 'out.bin'), 2 * MiB).equals(fs.readFileSync(src)), 'the cold data reads back');
  assert.equal(await d.stop(), 0);
});
