// `couchestor volumes create` with a bad tier or a zero size, through the
// daemon: the CLI printed the admin API's schema wording, "body/tier must be
// equal to one of the allowed values" (which values?) and "body/sizeBytes
// must be >= 1", while the same command offline said "no pool with
// tier=lukewarm" and "volume size must be a whole number of bytes between 1
// and ...". Now --tier is checked by the CLI (usage error, exit 2, as
// `volumes migrate`'s), a zero size gets createVolume's message both ways, and
// the API's enum errors list the allowed values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from './helpers/daemon.js';

test('volumes create with a bad --tier or size 0: the same clear message with the daemon running and offline; the API names the allowed tiers', async (t) => {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  const check = (how: string) => {
    const tier = d.cli('volumes', 'create', 'x', '1M', '--tier', 'lukewarm');
    assert.equal(tier.status, 2, `${how}: ${tier.stderr}`);
    assert.match(tier.stderr, /^couchestor: volumes create: --tier must be hot, warm or cold, got "lukewarm"$/m, how);
    const zero = d.cli('volumes', 'create', 'x', '0');
    assert.equal(zero.status, 1, `${how}: ${zero.stderr}`);
    assert.match(zero.stderr, /^couchestor: volume size must be a whole number of bytes between 1 and \d+$/m, how);
  };
  check('daemon running');
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/volumes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'x', sizeBytes: 1048576, tier: 'glacier' }),
  });
  assert.equal(res.status, 400);
  assert.match(((await res.json()) as { message: string }).message, /^body\/tier must be equal to one of the allowed values: "hot", "warm", "cold"$/);
  assert.equal(await d.stop(), 0);
  check('offline');
});
