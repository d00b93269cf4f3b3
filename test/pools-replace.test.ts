// `couchestor pools replace NAME`: the explicit step that makes a new, empty disk the pool (a new
// identity in its directory). Without it an empty directory is never taken for a pool the index
// knows (pool-identity.test.ts). A cold pool is rebuilt from parity; a hot/warm pool holds single
// copies, so replacing one whose volumes had data only there is refused unless --discard-volumes,
// and those volumes then fail (never read as zeros). And the upgrade: pool directories of a build
// before the identity get one at start, an empty one stays offline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLIENT_ENV, TestDaemon, run } from './helpers/daemon.js';
import { MiB, assertSameBytes, dropCache, patternBytes, readExport, scrub } from './helpers/cold.js';
import { asBeforePoolIdentity, coldVolumeWithWork, mountPool, readyz, s3ObjectOnHot1, unmountPool, writeJournaled } from './helpers/missing-pool.js';
import { startWarmDaemon } from './helpers/hot-warm.js';
import { aws, awsFail } from './helpers/s3-env.js';

function identityOf(dir: string): { pool: string; poolUuid: string; dataDirId: string } {
  return JSON.parse(fs.readFileSync(path.join(dir, '.couchestor-pool'), 'utf8')) as { pool: string; poolUuid: string; dataDirId: string };
}

test('pools replace on a cold pool (daemon running): a new identity, every shard rebuilt from parity, reads exact with two other pools lost', async (t) => {
  const fx = await coldVolumeWithWork(t, 'pools-replace-cold-', 8 * MiB, 8 * MiB, 0x2e1);
  const { work, model } = fx;
  const pools = path.join(fx.dataDir, 'pools');
  const cold2 = path.join(pools, 'cold-2');
  const oldUuid = identityOf(cold2).poolUuid;
  assert.equal(await fx.d.stop(), 0);
  // cold-2's disk died; a new, empty one is mounted at its path.
  fs.rmSync(cold2, { recursive: true });
  fs.mkdirSync(cold2);
  const d = await fx.restart();
  assert.equal((await readyz(d)).status, 503, 'the new empty disk is not the pool before pools replace');
  assert.deepEqual(fs.readdirSync(cold2), []);

  // Refused while another pool is online, or for a directory with something in it.
  assert.match(d.cli('pools', 'replace', 'cold-3').stderr, /pool cold-3 is online/);
  fs.writeFileSync(path.join(cold2, 'stray'), 'x');
  const notEmpty = d.cli('pools', 'replace', 'cold-2');
  assert.notEqual(notEmpty.status, 0);
  assert.match(notEmpty.stderr, /cold-2: .*cold-2 is not empty \(stray\)/);
  fs.rmSync(path.join(cold2, 'stray'));

  const replaced = d.cli('pools', 'replace', 'cold-2', '--json');
  assert.equal(replaced.status, 0, replaced.stderr);
  const report = JSON.parse(replaced.stdout) as { uuid: string; rebuild: { stripesRebuilt: number; complete?: boolean } };
  assert.ok(report.rebuild.stripesRebuilt > 0, `shards rebuilt onto cold-2: ${replaced.stdout}`);
  assert.equal(identityOf(cold2).poolUuid, report.uuid);
  assert.notEqual(report.uuid, oldUuid, 'a new disk gets a new identity');
  assert.equal((await readyz(d)).status, 200);
  assert.equal((await scrub(d)).badStripes, 0);

  // Two other pools lost: every stripe needs cold-2's rebuilt shard.
  fs.renameSync(path.join(pools, 'cold-0'), path.join(work, 'cold-0.gone'));
  fs.renameSync(path.join(pools, 'cold-5'), path.join(work, 'cold-5.gone'));
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 from cold-2 rebuilt, cold-0 and cold-5 lost');
});

test('pools replace on a warm pool whose volume had data only there: refused; with --discard-volumes the volume fails, never zeros', async (t) => {
  const d0 = await startWarmDaemon();
  let d: TestDaemon = d0;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pools-replace-warm-'));
  t.after(async () => {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });
  d.createVolume('v', '4M', '--tier', 'warm');
  fs.writeFileSync(path.join(work, 'src.bin'), patternBytes(4 * MiB, 0x2e2));
  run('nbdcopy', [path.join(work, 'src.bin'), d.exportUri('v')]);
  const warm0 = path.join(d.dataDir, 'pools', 'warm-0');
  assert.equal(await d.stop(), 0);
  fs.rmSync(warm0, { recursive: true });
  fs.mkdirSync(warm0);

  // Daemon stopped: the offline command decides from the index.
  const refused = d.cli('pools', 'replace', 'warm-0');
  assert.notEqual(refused.status, 0, refused.stdout);
  assert.match(refused.stderr, /pool warm-0: volumes v have data only on it \(warm pools hold single copies\): replacing its disk loses that\..*--discard-volumes/);
  assert.deepEqual(fs.readdirSync(warm0), [], 'a refused replace writes nothing');
  const discarded = d.cli('pools', 'replace', 'warm-0', '--discard-volumes', '--json');
  assert.equal(discarded.status, 0, discarded.stderr);
  assert.deepEqual((JSON.parse(discarded.stdout) as { volumesLost: string[] }).volumesLost, ['v']);

  d = await TestDaemon.start({ dataDir: d0.dataDir });
  assert.equal((await readyz(d)).status, 200, 'warm-0 is the pool again');
  const read = spawnSync('nbdcopy', [d.exportUri('v'), path.join(work, 'out.bin')], { encoding: 'utf8', env: CLIENT_ENV });
  assert.notEqual(read.status, 0, 'v is not served (its data is gone): no zeros');
  for (const deadline = Date.now() + 10_000; !/volume v lost its data on pool warm-0/.test(d.stderr); ) {
    assert.ok(Date.now() < deadline, `the daemon says why v is unavailable:\n${d.stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  // The pool itself works; the lost volume can be deleted.
  d.createVolume('w', '4M', '--tier', 'warm');
  const w = patternBytes(4 * MiB, 0x2e3);
  fs.writeFileSync(path.join(work, 'w.bin'), w);
  run('nbdcopy', [path.join(work, 'w.bin'), d.exportUri('w')]);
  assertSameBytes(readExport(d, 'w', path.join(work, 'out.bin')), w, 'w on the replaced pool');
  assert.equal(d.cli('volumes', 'delete', 'v').status, 0);
});

test('pool directories of a build before the identity get one at start and carry on; an empty one stays offline until its disk is back', async (t) => {
  const fx = await coldVolumeWithWork(t, 'pools-replace-legacy-', 8 * MiB, 4 * MiB, 0x2e4);
  const { work, model } = fx;
  const pools = path.join(fx.dataDir, 'pools');
  const names = ['hot-0', ...Array.from({ length: 6 }, (_, i) => `cold-${i}`)];
  assert.equal(await fx.d.stop(), 0);
  // As an earlier build left them: no identity files, no uuid in the pool records.
  await asBeforePoolIdentity(fx.dataDir, names);
  // cold-3's disk is not mounted at the upgrade start.
  const cold3 = path.join(pools, 'cold-3');
  unmountPool(cold3);

  const d = await fx.restart();
  const ready = await readyz(d);
  assert.equal(ready.status, 503);
  assert.deepEqual(ready.reasons, [`pool cold-3 offline (${cold3}): no pool identity in ${cold3}: is its disk mounted? If this is a new disk replacing a dead one, run \`couchestor pools replace cold-3\``]);
  assert.match(d.stderr, /pool directory from an earlier version: its pool identity is written.*pool=hot-0/);
  const recorded = new Map((await (await fetch(`http://127.0.0.1:${d.info.api.port}/v1/pools`)).json() as { name: string; uuid?: string }[]).map((p) => [p.name, p.uuid]));
  for (const n of names.filter((x) => x !== 'cold-3')) assert.equal(identityOf(path.join(pools, n)).poolUuid, recorded.get(n), `${n}: identity written, recorded in the index`);
  assert.deepEqual(fs.readdirSync(cold3), [], 'nothing written into the empty mount point');
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 after the upgrade start');

  mountPool(cold3);
  assert.equal((await readyz(d)).status, 200, 'cold-3 back: its layout is ours, its identity written');
  assert.equal(identityOf(cold3).pool, 'cold-3');
  assert.equal((await scrub(d)).badStripes, 0);
});

test('pools replace on a hot pool holding S3 objects (daemon running): refused naming them; with --discard-volumes GET answers that the data was lost, never bytes, until DELETE', async (t) => {
  const body = patternBytes(2 * MiB, 0x2e4);
  const { env, hot1, src } = await s3ObjectOnHot1(t, 'k0', body);
  const d = env.daemon;
  const objFiles = (dir: string) => fs.readdirSync(dir).flatMap((sub) => fs.readdirSync(path.join(dir, sub)).filter((f) => f.endsWith('.obj')));
  assert.equal(objFiles(path.join(hot1, 'objects')).length, 1, 'k0 is stored on hot-1');

  // hot-1's disk died; a new, empty one is mounted at its path.
  fs.renameSync(hot1, `${hot1}.dead`);
  t.after(() => fs.rmSync(`${hot1}.dead`, { recursive: true, force: true }));
  fs.mkdirSync(hot1);
  const refused = d.cli('pools', 'replace', 'hot-1');
  assert.notEqual(refused.status, 0, refused.stdout);
  assert.match(refused.stderr, /pool hot-1: S3 objects bkt\/k0 have data only on it: replacing its disk loses that\..*--discard-volumes.*those objects answer an error until deleted/);
  assert.deepEqual(fs.readdirSync(hot1), [], 'a refused replace writes nothing');

  const discarded = d.cli('pools', 'replace', 'hot-1', '--discard-volumes', '--json');
  assert.equal(discarded.status, 0, discarded.stderr);
  assert.equal((JSON.parse(discarded.stdout) as { objectsLost: number }).objectsLost, 1);
  assert.equal((await readyz(d)).status, 200, 'hot-1 is the pool again');
  const out = path.join(env.home, 'out.bin');
  const lost = aws(env, ['s3api', 'get-object', '--bucket', 'bkt', '--key', 'k0', out]);
  assert.notEqual(lost.status, 0, 'GET of the lost object fails');
  assert.match(lost.stderr, /\(InternalError\).*the object's data was lost with pool hot-1's disk \(replaced with `pools replace --discard-volumes`\): it can only be deleted/);
  assert.ok(!fs.existsSync(out) || fs.statSync(out).size === 0, 'no bytes of the lost object');

  // The replaced pool takes new objects; the lost one is deleted.
  assert.equal(aws(env, ['s3api', 'put-object', '--bucket', 'bkt', '--key', 'k1', '--body', src]).status, 0);
  assert.equal(aws(env, ['s3api', 'get-object', '--bucket', 'bkt', '--key', 'k1', out]).status, 0);
  assert.ok(fs.readFileSync(out).equals(body), 'k1 on the replaced pool reads back');
  assert.equal(aws(env, ['s3api', 'delete-object', '--bucket', 'bkt', '--key', 'k0']).status, 0);
  assert.equal(awsFail(env, ['s3api', 'get-object', '--bucket', 'bkt', '--key', 'k0', out]).code, 'NoSuchKey');
  // The lost object's bytes were never counted on the new disk: its DELETE leaves k1's counted.
  const listed = (await (await fetch(`http://127.0.0.1:${d.info.api.port}/v1/pools`)).json()) as { name: string; usedBytes: number }[];
  assert.equal(listed.find((p) => p.name === 'hot-1')?.usedBytes, body.length, 'hot-1 counts k1 only');
});

test('upgrade: a pool of a build before the identity whose path holds another data directory\'s disk at the first start stays offline, and its own disk mounted later gets its identity', async (t) => {
  const fx = await coldVolumeWithWork(t, 'pools-replace-legacy-foreign-', 8 * MiB, 4 * MiB, 0x2e5);
  const { work, model } = fx;
  const pools = path.join(fx.dataDir, 'pools');
  assert.equal(await fx.d.stop(), 0);
  await asBeforePoolIdentity(fx.dataDir, ['hot-0', ...Array.from({ length: 6 }, (_, i) => `cold-${i}`)]);
  // cold-3's own disk aside; another node's pool disk (its identity) mounted at cold-3's path.
  const cold3 = path.join(pools, 'cold-3');
  fs.renameSync(cold3, `${cold3}.disk`);
  fs.mkdirSync(cold3);
  const foreign = { format: 1, pool: 'cold-9', poolUuid: '00000000-0000-4000-8000-000000000009', dataDirId: '00000000-0000-4000-8000-0000000000dd', createdMs: 1 };
  fs.writeFileSync(path.join(cold3, '.couchestor-pool'), JSON.stringify(foreign) + '\n');
  fs.mkdirSync(path.join(cold3, 'segments'));

  let d = await fx.restart();
  const ready = await readyz(d);
  assert.equal(ready.status, 503);
  assert.match(ready.reasons.join('\n'), /cold-3.*holds the identity of pool cold-9 of another data directory/);
  assert.doesNotMatch(d.stderr, /its pool identity is written[^\n]*pool=cold-3/, 'another disk is not logged as upgraded');
  assert.equal(await d.stop(), 0);

  // The right disk is mounted (no identity yet: an earlier build made it): upgraded at the next start.
  fs.rmSync(cold3, { recursive: true });
  fs.renameSync(`${cold3}.disk`, cold3);
  d = await fx.restart();
  assert.equal((await readyz(d)).status, 200, `cold-3's own disk is taken:\n${d.stderr}`);
  const recorded = new Map((await (await fetch(`http://127.0.0.1:${d.info.api.port}/v1/pools`)).json() as { name: string; uuid?: string }[]).map((p) => [p.name, p.uuid]));
  assert.equal(identityOf(cold3).poolUuid, recorded.get('cold-3'));
  await dropCache(d);
  assertSameBytes(readExport(d, 'c1', path.join(work, 'out.bin')), model, 'c1 with cold-3 back');
  assert.equal((await scrub(d)).badStripes, 0);
});

test('pools replace of the journal\'s pool is refused while the daemon runs (its journal open on the old disk), even with --discard-volumes; stopped, it goes on', async (t) => {
  const fx = await coldVolumeWithWork(t, 'pools-replace-journal-', 8 * MiB, 4 * MiB, 0x2e6);
  writeJournaled(fx.d, fx.work, fx.model, 2 * MiB, 0x2e7);
  const hot0 = path.join(fx.dataDir, 'pools', 'hot-0');
  // hot-0's disk died; a new, empty one is mounted at its path while the daemon runs.
  fs.renameSync(hot0, `${hot0}.dead`);
  fs.mkdirSync(hot0);
  for (const args of [[], ['--discard-volumes']]) {
    const refused = fx.d.cli('pools', 'replace', 'hot-0', ...args);
    assert.notEqual(refused.status, 0, `replaced with the journal open (${args.join(' ')}):\n${refused.stdout}`);
    assert.match(refused.stderr, /pool hot-0 holds the cold tier's journal, open in the running daemon: stop the daemon, then run `couchestor pools replace hot-0 --discard-volumes`/);
  }
  assert.deepEqual(fs.readdirSync(hot0), [], 'a refused replace writes nothing');
  assert.equal(await fx.d.stop(), 0);

  const replaced = fx.d.cli('pools', 'replace', 'hot-0', '--discard-volumes', '--json');
  assert.equal(replaced.status, 0, replaced.stderr);
  assert.equal((JSON.parse(replaced.stdout) as { journalLost: boolean }).journalLost, true);
  fs.mkdirSync(path.join(hot0, 'journal'));
  const d = await fx.restart();
  assert.equal((await readyz(d)).status, 200);
});
