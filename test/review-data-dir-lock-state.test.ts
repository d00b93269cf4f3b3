// Review of the data-directory lock (src/data-dir-lock.ts) against daemon.json:
// a daemon.json left by a killed daemon whose pid now belongs to another live
// `serve` (another data directory's daemon, or the same directory's daemon
// restarted with the same pid, as in a container or after a reboot) must not
// send the CLI to the API it names. The lock says which daemon owns the directory;
// a daemon of a version before the lock (which never takes it) still blocks a
// start, fsck and salvage; and a pool outside the data directory is locked too.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { CLI, TestDaemon, type DaemonInfo } from './helpers/daemon.js';

const dirs: string[] = [];
const spawned: ChildProcess[] = [];
after(() => {
  for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-rvlock-'));
  dirs.push(d);
  return d;
}

function cli(dataDir: string, ...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args, '--data-dir', dataDir], { encoding: 'utf8' });
}

function volumeNames(r: ReturnType<typeof cli>): string[] {
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { name: string }[]).map((v) => v.name).sort();
}

/** daemon.json as a daemon that served `dataDir` would have left it, naming `pid` and `api`. */
function staleState(dataDir: string, pid: number, info: DaemonInfo): void {
  fs.writeFileSync(path.join(dataDir, 'daemon.json'), JSON.stringify({ ...info, pid }));
}

test("a stale daemon.json whose pid is now another directory's daemon: offline commands run offline, never against that daemon's API", async () => {
  const other = await TestDaemon.start({ dataDir: tempDir(), config: 'demoVolume: null\n' });
  spawned.push(other.proc);
  const dataDir = tempDir();
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), 'demoVolume: null\n');
  // This directory's daemon was SIGKILLed; its pid (and ports) now belong to `other`.
  staleState(dataDir, other.info.pid, other.info);

  const created = cli(dataDir, 'volumes', 'create', 'mine', '1M');
  assert.equal(created.status, 0, created.stderr);
  assert.deepEqual(volumeNames(other.cli('volumes', 'list', '--json')), [], "the other directory's daemon got no volume");
  const f = cli(dataDir, 'fsck');
  assert.doesNotMatch(f.stderr, /stop the daemon first/, 'no daemon serves this directory');
  await other.stop();
  assert.deepEqual(volumeNames(cli(dataDir, 'volumes', 'list', '--json')), ['mine'], 'the volume is in this directory');
});

test('a daemon restarted with the same pid as the killed one (daemon.json left behind): while it starts, commands are refused as starting, not sent to the old API', async () => {
  const other = await TestDaemon.start({ dataDir: tempDir(), config: 'demoVolume: null\n' });
  spawned.push(other.proc);
  const dataDir = tempDir();
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), 'demoVolume: null\n');
  // The previous incarnation had this very pid: the launcher writes its daemon.json with its own
  // pid (naming an API that is someone else's now) and then runs `serve` in the same process.
  const launcher = path.join(tempDir(), 'same-pid-serve.mjs');
  fs.writeFileSync(
    launcher,
    `import fs from 'node:fs';\n` +
      `fs.writeFileSync(${JSON.stringify(path.join(dataDir, 'daemon.json'))}, JSON.stringify({ ...${JSON.stringify(other.info)}, pid: process.pid }));\n` +
      `await import(${JSON.stringify(pathToFileURL(CLI).href)});\n`,
  );
  const proc = spawn(process.execPath, [launcher, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, COUCHESTOR_TEST_PAUSE_START: 'after-open' },
  });
  spawned.push(proc);
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const paused = await new Promise<boolean>((resolve) => {
    readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (line.startsWith('couchestor paused start-after-open ')) resolve(true);
    });
    proc.once('close', () => resolve(false));
  });
  assert.ok(paused, `the daemon reached its paused start: ${stderr}`);

  const r = cli(dataDir, 'volumes', 'create', 'mine', '1M');
  assert.equal(r.status, 1, `refused while the daemon starts: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, new RegExp(`in use by the couchestor daemon \\(pid ${proc.pid}\\): it is starting`));
  const s = cli(dataDir, 'status');
  assert.equal(s.status, 1);
  assert.match(s.stderr, /it is starting/);
  assert.deepEqual(volumeNames(other.cli('volumes', 'list', '--json')), [], "the old API's new owner got no volume");
  await other.stop();
});

test('a daemon of a version before the lock (daemon.json, index open, no lock): serve, fsck and journal salvage still refuse, as the daemon.json check did', async () => {
  const dataDir = tempDir();
  fs.writeFileSync(path.join(dataDir, 'couchestor.yaml'), 'demoVolume: null\n');
  assert.equal(cli(dataDir, 'volumes', 'create', 'v1', '1M').status, 0);
  // Stands in for that daemon: a live `serve` with this directory's index open and no lock taken.
  const index = path.join(dataDir, 'meta', 'data.mdb');
  const old = spawn(process.execPath, ['-e', "require('fs').openSync(process.argv[1], 'r'); console.log('open'); setInterval(() => {}, 60000);", index, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  spawned.push(old);
  await new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: old.stdout! }).on('line', (line) => line === 'open' && resolve());
    old.once('exit', (code) => reject(new Error(`stand-in exited ${code}`)));
  });
  fs.writeFileSync(path.join(dataDir, 'daemon.json'), JSON.stringify({ pid: old.pid, api: { host: '127.0.0.1', port: 1 } }));

  for (const args of [['fsck'], ['journal', 'salvage']]) {
    const r = cli(dataDir, ...args);
    assert.equal(r.status, 1, args.join(' '));
    assert.match(r.stderr, /stop the daemon first/, args.join(' '));
  }
  const s = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(s.status, 1, `the second daemon must not start: ${s.stdout}`);
  assert.match(s.stderr, new RegExp(`data directory ${dataDir} is in use by the couchestor daemon \\(pid ${old.pid}\\): it is a version before the data-directory lock`));

  const gone = new Promise((r) => old.once('exit', r));
  old.kill('SIGKILL');
  await gone;
  const d = await TestDaemon.start({ dataDir }); // its daemon.json is stale now: no refusal
  spawned.push(d.proc);
  assert.deepEqual(volumeNames(d.cli('volumes', 'list', '--json')), ['v1']);
  await d.stop();
});

test('two data directories naming one pool directory (an absolute path): the second serve and offline commands are refused while the first holds the pool', async () => {
  const shared = path.join(tempDir(), 'hot');
  const config = `demoVolume: null\npools:\n  - { name: hot-0, tier: hot, path: ${JSON.stringify(shared)}, capacity: auto }\n` + Array.from({ length: 6 }, (_, i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('');
  const first = await TestDaemon.start({ dataDir: tempDir(), config });
  spawned.push(first.proc);
  first.createVolume('v1', '1M');
  const second = tempDir();
  fs.writeFileSync(path.join(second, 'couchestor.yaml'), config);
  const inUse = new RegExp(`pool directory ${shared.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by the couchestor daemon \\(pid ${first.info.pid}\\)`);

  const s = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', second, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(s.status, 1, `the second daemon must not start on the shared pool: ${s.stdout}`);
  assert.match(s.stderr, inUse);
  for (const args of [['volumes', 'create', 'v2', '1M'], ['fsck']]) {
    const r = cli(second, ...args);
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, inUse, args.join(' '));
  }
  assert.equal(fs.existsSync(path.join(second, 'meta')), false, 'the refused processes opened no index');
  assert.deepEqual(volumeNames(first.cli('volumes', 'list', '--json')), ['v1']);
  await first.stop();
  // Its lock is free once the first daemon stopped; the directory is still the first data directory's pool (its
  // identity, pools/identity.ts: it holds v1's file), so the second is refused for that, not for the lock.
  const r = cli(second, 'volumes', 'list', '--json');
  assert.equal(r.status, 1, `the first data directory's pool taken by the second: ${r.stdout}`);
  assert.doesNotMatch(r.stderr, inUse, 'the lock is free once the first daemon stopped');
  assert.match(r.stderr, /pool hot-0: .*hot holds the identity of pool hot-0 of another data directory/);
});
