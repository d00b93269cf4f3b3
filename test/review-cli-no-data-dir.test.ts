// An offline command on a data directory that does not exist (a mistyped
// --data-dir, or the default ./couchestor-data run from the wrong directory)
// made a whole new data directory there: configuration, index, a hot and six
// cold pools. `volumes list` then printed an empty table, `pools list` seven
// fresh pools, and `fsck` reported that empty directory clean (exit 0): the
// operator was told their volumes were gone, or that a disk was fine, about a
// directory that was never theirs. Now every offline command refuses (exit 1)
// naming the path, and makes nothing; only serve makes a data directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLI } from './helpers/daemon.js';

test('offline commands on a data directory that does not exist: exit 1 naming it, nothing made (also the default ./couchestor-data)', (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cli-no-data-dir-'));
  t.after(() => fs.rmSync(work, { recursive: true, force: true }));
  const missing = path.join(work, 'couchestr-data');
  const env = { ...process.env };
  delete env.COUCHESTOR_DATA_DIR;
  for (const args of [['volumes', 'list'], ['fsck'], ['volumes', 'create', 'v', '1M'], ['pools', 'list']]) {
    const r = spawnSync(process.execPath, [CLI, ...args, '--data-dir', missing], { encoding: 'utf8', env, timeout: 30_000 });
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.equal(r.stderr, `couchestor: no data directory at ${missing}: ${args.slice(0, 2).join(' ').replace(/ v$/, '')} works on an existing one (check --data-dir or $COUCHESTOR_DATA_DIR; \`couchestor serve\` makes a new one)\n`);
    assert.equal(r.stdout, '', 'fsck printed no report');
    assert.equal(fs.existsSync(missing), false, `${args.join(' ')} made nothing`);
  }
  // No --data-dir: the default, ./couchestor-data, in the working directory.
  const r = spawnSync(process.execPath, [CLI, 'volumes', 'list'], { encoding: 'utf8', env, cwd: work, timeout: 30_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^couchestor: no data directory at .*\/couchestor-data: volumes list works on an existing one/);
  assert.deepEqual(fs.readdirSync(work), []);
});
