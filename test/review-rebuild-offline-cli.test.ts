// Review of 490b675/0397a75: `couchestor rebuild <pool>` whose answer says
// complete: false (here: two more pools lost, every stripe left with 3 of
// 4+2 shards, none can be rebuilt) exits 3 with a message naming why,
// not 0: a script must not take a pool that is not fully rebuilt as done.
// Through the real daemon and CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MiB, losePool, loseAndReplacePool, startWithColdVolume } from './helpers/cold.js';

const STRIPES = 4;

test('couchestor rebuild exits 3 and says why when the pool is not fully rebuilt', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'review-rebuild-cli-'));
  const { d } = await startWithColdVolume(work, 8 * MiB, STRIPES * MiB, 0x51ab);
  try {
    loseAndReplacePool(d, 2);
    losePool(d, 3);
    losePool(d, 4);
    const cli = d.cli('rebuild', 'cold-2', '--json');
    const report = JSON.parse(cli.stdout) as { complete: boolean; notRebuilt: number; volumesSkipped: unknown[] };
    assert.equal(report.complete, false, cli.stdout);
    assert.ok(report.notRebuilt > 0, cli.stdout);
    assert.equal(cli.status, 3, `exit status (stderr: ${cli.stderr})`);
    assert.match(cli.stderr, /pool cold-2 is not fully rebuilt: \d+ stripes were not rebuilt/);
  } finally {
    await d.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
