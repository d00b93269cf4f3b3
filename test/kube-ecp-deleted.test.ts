// The ErasureCodingPolicy the cold tier runs deleted under a running daemon:
// nothing stops (the cold tier keeps the spec it started with, cold data
// reads back), the daemon warns that the next start would run no cold tier,
// and once the CR is created again its status is Active again and a restart
// runs the cold tier with the old stripes readable.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { KubeEnv } from './helpers/kube.js';
import type { TestDaemon } from './helpers/daemon.js';
import { coldStatus } from './helpers/cold.js';
import { nbdcopyOut, reconcile } from './helpers/control-loop.js';
import { Cluster, destagedColdVolume, ECP, startKubeCluster, startKubeDaemon, stopKubeCluster, until, untilNodeStatus } from './helpers/kube-daemon.js';

const MiB = 1024 * 1024;
let kube: KubeEnv;
let cluster: Cluster;
const daemons: TestDaemon[] = [];

before(async () => ({ kube, cluster } = await startKubeCluster()));

after(() => stopKubeCluster(kube, daemons));

test('the running ErasureCodingPolicy CR deleted: the cold tier carries on, the daemon warns about the next start; created again, status Active and a restart runs the cold tier', async () => {
  const opts = { kubeconfig: kube.kubeconfig(), nodeName: 'node-e' };
  let d = await startKubeDaemon(opts);
  daemons.push(d);
  const src = await destagedColdVolume(d, 'cv', 'cold.bin');
  await untilNodeStatus(cluster, ECP, 'ec21', 'node-e', (s) => s.phase === 'Active');

  await cluster.delete(ECP, 'ec21');
  await until('the warning', () => (/ErasureCodingPolicy ec21 was deleted while the cold tier runs it: .*next start will find no policy/.test(d.stderr) ? true : undefined));
  await reconcile(d, true);
  assert.equal((await coldStatus(d) as unknown as { policy: { name: string } }).policy.name, 'ec21');
  assert.ok(nbdcopyOut(d.exportUri('cv'), path.join(d.dataDir, 'out1.bin'), 2 * MiB).equals(fs.readFileSync(src)));

  await cluster.create(ECP, 'ErasureCodingPolicy', 'ec21', { dataShards: 2, parityShards: 1 });
  await reconcile(d, false);
  await untilNodeStatus(cluster, ECP, 'ec21', 'node-e', (s) => s.phase === 'Active' && s.activeDataShards === 2);
  assert.equal(await d.stop(), 0);
  d = await startKubeDaemon({ ...opts, dataDir: d.dataDir });
  daemons.push(d);
  assert.doesNotMatch(d.stderr, /cold tier disabled/);
  assert.ok(nbdcopyOut(d.exportUri('cv'), path.join(d.dataDir, 'out2.bin'), 2 * MiB).equals(fs.readFileSync(src)));
});
