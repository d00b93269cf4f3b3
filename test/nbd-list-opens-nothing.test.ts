// NBD_OPT_LIST answers from the index and the pools' state: it opens no
// volume. Opening every volume to list it (9135041) made the first list
// after a start with 10,000 volumes take 21-27 s, the event loop blocked
// (every other client's I/O, the API and S3 stalled), and left one file
// descriptor open per volume for good (10,043 fds). A volume whose pool is
// offline is still left out (nbd-export-unavailable), and one that is back
// listed again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { CLIENT_ENV, TestDaemon } from './helpers/daemon.js';
import { startNbdTestDaemon } from './helpers/nbd-client.js';
import { processFds } from './helpers/many-volumes.js';

const VOLUMES = 40;

/** Descriptors of the daemon's volume files (pools/<pool>/volumes/<id>...). */
const volumeFds = (pid: number): number => processFds(pid).volumeFiles;

test('NBD_OPT_LIST (nbdsh opt_list) lists every volume without opening one; opening is left to the export asked for', async (t) => {
  const d = await startNbdTestDaemon();
  const restarted: TestDaemon[] = [];
  t.after(async () => {
    for (const r of restarted) await r.kill();
    await d.cleanup();
  });
  const api = `http://127.0.0.1:${d.info.api.port}`;
  for (let i = 0; i < VOLUMES; i++) {
    const res = await fetch(`${api}/v1/volumes`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: `l${i}`, sizeBytes: 1 << 20 }) });
    assert.equal(res.status, 201, await res.text());
  }
  // A restart: nothing is open but what the start opens.
  assert.equal(await d.stop(), 0);
  const d2 = await TestDaemon.start({ dataDir: d.dataDir });
  restarted.push(d2);
  const before = volumeFds(d2.proc.pid!);

  const script = `
h.set_opt_mode(True)
h.connect_uri(${JSON.stringify(d2.unixUri(''))})
names = []
h.opt_list(lambda name, desc: names.append(name))
print(len(names))
h.opt_abort()
`;
  for (let k = 0; k < 2; k++) {
    const sh = spawnSync('nbdsh', ['-c', script], { encoding: 'utf8', env: CLIENT_ENV });
    assert.equal(sh.status, 0, sh.stderr);
    assert.equal(Number(sh.stdout.trim()), VOLUMES + 1);
  }
  assert.equal(volumeFds(d2.proc.pid!), before, 'the list opened volume files');

  // The export asked for opens (one file) while its client holds it, closed once the client has gone;
  // nbdinfo --list, which probes each, sees them all.
  const pid = d2.proc.pid!;
  const held = `import os, re
print(h.get_size())
n = 0
for f in os.listdir('/proc/${pid}/fd'):
    try:
        n += 1 if re.search(r'/volumes/[^/]+$', os.readlink('/proc/${pid}/fd/' + f)) else 0
    except OSError:
        pass
print(n)`;
  const one = spawnSync('nbdsh', ['-u', d2.unixUri('l7'), '-c', held], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(one.status, 0, one.stderr);
  assert.deepEqual(one.stdout.trim().split('\n'), [String(1 << 20), String(before + 1)]);
  const deadline = Date.now() + 5_000;
  while (volumeFds(pid) !== before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(volumeFds(pid), before, 'the volume stayed open after its client left');
  const list = spawnSync('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${d2.info.nbd.socketPath}`], { encoding: 'utf8', env: CLIENT_ENV });
  assert.equal(list.status, 0, list.stderr);
  assert.equal((JSON.parse(list.stdout) as { exports: unknown[] }).exports.length, VOLUMES + 1);
});
