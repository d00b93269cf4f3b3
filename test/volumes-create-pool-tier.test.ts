// `couchestor volumes create --pool P` honours the tier: P must be a pool of
// the tier asked (with no --tier, the volume takes P's tier), and a cold
// volume, striped over every cold pool, takes no cold pool (its --pool is the
// hot pool of its file after a promotion). Before, the tier asked was
// overwritten by the pool's: `--tier hot --pool cold-0` made a cold volume,
// `--tier warm --pool hot-0` a hot one, and `--pool cold-0` a "cold" volume
// whose file sat in a cold pool's directory. Checked through the real CLI,
// once against the daemon (HTTP 400) and once offline (the CLI opens the
// manager itself): the same refusals, no volume or file left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestDaemon } from './helpers/daemon.js';
import { startWarmDaemon } from './helpers/hot-warm.js';

interface Rec {
  name: string;
  id: number;
  tier: string;
  poolName: string;
}

/** [--tier, --pool, the error's text] of each refused create. */
const REFUSED: [string | null, string, RegExp][] = [
  ['hot', 'cold-0', /pool cold-0 is a cold pool and tier hot was asked: a cold volume is striped over every cold pool/],
  ['warm', 'hot-0', /pool hot-0 is a hot pool and tier warm was asked: name a warm pool, or leave the pool out/],
  ['hot', 'warm-0', /pool warm-0 is a warm pool and tier hot was asked: name a hot pool, or leave the pool out/],
  [null, 'cold-0', /pool cold-0 is a cold pool and no tier was asked: a cold volume is striped over every cold pool, not placed on one/],
  ['cold', 'cold-3', /pool cold-3 is a cold pool and tier cold was asked: a cold volume is striped over every cold pool/],
  ['cold', 'warm-0', /pool warm-0 is a warm pool and tier cold was asked: a cold volume's pool is the hot pool of its file/],
];

/** [name, --tier, --pool, tier and pool of the volume made] of each accepted create. */
const ACCEPTED: [string, string | null, string, string, string][] = [
  ['w', null, 'warm-0', 'warm', 'warm-0'],
  ['h', null, 'hot-0', 'hot', 'hot-0'],
  ['w2', 'warm', 'warm-0', 'warm', 'warm-0'],
  ['c', 'cold', 'hot-0', 'cold', 'hot-0'],
];

function volumeFiles(d: TestDaemon): string[] {
  return fs
    .readdirSync(path.join(d.dataDir, 'pools'))
    .flatMap((p) => (fs.existsSync(path.join(d.dataDir, 'pools', p, 'volumes')) ? fs.readdirSync(path.join(d.dataDir, 'pools', p, 'volumes')).map((f) => `${p}/${f}`) : []))
    .sort();
}

function checkCreates(d: TestDaemon, suffix: string, how: string): void {
  const before = volumeFiles(d);
  for (const [tier, pool, error] of REFUSED) {
    const r = d.cli('volumes', 'create', `x${suffix}`, '4M', ...(tier ? ['--tier', tier] : []), '--pool', pool);
    assert.notEqual(r.status, 0, `${how}: --tier ${tier} --pool ${pool} refused (stdout ${r.stdout})`);
    assert.match(r.stderr, error, `${how}: --tier ${tier} --pool ${pool}`);
  }
  const list = JSON.parse(d.cli('volumes', 'list', '--json').stdout) as Rec[];
  assert.equal(list.filter((v) => v.name === `x${suffix}`).length, 0, `${how}: no volume left by a refused create`);
  assert.deepEqual(volumeFiles(d), before, `${how}: no file left by a refused create`);

  for (const [name, tier, pool, wantTier, wantPool] of ACCEPTED) {
    const r = d.cli('volumes', 'create', name + suffix, '4M', ...(tier ? ['--tier', tier] : []), '--pool', pool, '--json');
    assert.equal(r.status, 0, `${how}: --tier ${tier} --pool ${pool}: ${r.stderr}`);
    const rec = JSON.parse(r.stdout) as Rec;
    assert.deepEqual([rec.tier, rec.poolName], [wantTier, wantPool], `${how}: --tier ${tier} --pool ${pool}`);
    if (wantTier !== 'cold') assert.ok(fs.existsSync(path.join(d.dataDir, 'pools', wantPool, 'volumes', `${rec.id}.dat`)), `${how}: ${name}${suffix}'s file on ${wantPool}`);
  }
}

test('volumes create --pool: a pool of another tier is refused naming pool, its tier and the tier asked; daemon and offline', async (t) => {
  const d = await startWarmDaemon();
  t.after(() => d.cleanup());

  checkCreates(d, '-live', 'through the daemon');
  // The API answers 400 with the message (the CLI above printed it).
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/volumes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'y', sizeBytes: 4 * 1024 * 1024, tier: 'warm', pool: 'hot-0' }),
  });
  assert.equal(res.status, 400);
  assert.match(((await res.json()) as { message: string }).message, /pool hot-0 is a hot pool and tier warm was asked/);
  assert.equal((await fetch(`http://127.0.0.1:${d.info.api.port}/healthz`)).status, 200, 'the daemon carries on');

  assert.equal(await d.stop(), 0);
  checkCreates(d, '-offline', 'offline');
});
