// Review of f7b8734's CLI: --quarantine-damaged and --list-quarantine were
// accepted by every command and ignored by all but fsck, so an operator's
// `couchestor journal salvage --quarantine-damaged` ran the salvage (which
// drops journal records) and quarantined nothing, and `serve
// --quarantine-damaged` started the daemon. Now they are a usage error (exit
// 2) anywhere but fsck, and nothing runs. Real couchestor CLI on a stopped
// daemon's data dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { CLI } from './helpers/daemon.js';
import { fsckCli, killAndRemove } from './helpers/damaged-record.js';
import { startS3 } from './helpers/s3-env.js';

test('--quarantine-damaged / --list-quarantine on a command other than fsck: usage error, exit 2, nothing run', async (t) => {
  const env = await startS3();
  const dataDir = env.daemon.dataDir;
  t.after(() => killAndRemove(env, dataDir));
  assert.equal(await env.daemon.stop(), 0);
  for (const [args, flag] of [
    [['journal', 'salvage', '--quarantine-damaged'], 'quarantine-damaged'],
    [['serve', '--quarantine-damaged', '--s3-port', '0', '--api-port', '0', '--nbd-port', '0', '--metrics-port', '0'], 'quarantine-damaged'],
    [['pools', 'list', '--list-quarantine'], 'list-quarantine'],
  ] as const) {
    const r = spawnSync(process.execPath, [CLI, ...args, '--data-dir', dataDir], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 2, `${args.join(' ')}: status ${r.status} signal ${r.signal}\n${r.stderr}`);
    // The first line is the refusal (the usage text follows it); nothing ran before it.
    assert.equal(r.stderr.split('\n')[0], `couchestor: --${flag} goes with fsck only (couchestor fsck --${flag})`, r.stderr);
    assert.equal(r.stdout, '');
  }
  // With fsck they still work.
  assert.equal(fsckCli(dataDir, '--list-quarantine').status, 0);
  assert.equal(fsckCli(dataDir, '--quarantine-damaged').status, 0);
});
