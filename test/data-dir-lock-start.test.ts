// The data-directory lock (src/data-dir-lock.ts) with real processes: a
// daemon held in its start (index open, journal replayed, daemon.json not yet
// written) refuses offline CLI commands and a second `serve` before they touch
// anything; a SIGKILLed daemon's lock is gone at once; online commands still
// go through a ready daemon's API.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { CLI, TestDaemon, nbdsh } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG } from './helpers/cold.js';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { DataDirLock, LOCK_FILE } from '../src/data-dir-lock.js';

const SERVE_PORTS = ['--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'];
const spawned: ChildProcess[] = [];
const dirs: string[] = [];
after(() => {
  for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A data directory with the cold tier on (4+2 policy, destage only on request) and 1 MiB journaled in a cold volume: the next start replays it. */
async function dirWithJournal(): Promise<{ dataDir: string; journalDir: string; written: Buffer }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-lock-'));
  dirs.push(dataDir);
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  const d = await TestDaemon.start({ dataDir, config: MANUAL_DESTAGE_CONFIG });
  const written = crypto.randomBytes(1024 * 1024);
  const src = path.join(dataDir, '..', `${path.basename(dataDir)}.bin`);
  fs.writeFileSync(src, written);
  try {
    d.createVolume('c1', '8M', '--tier', 'cold');
    nbdsh(`h.connect_uri(${JSON.stringify(d.exportUri('c1'))})\nh.pwrite(open(${JSON.stringify(src)}, 'rb').read(), 0)\nh.flush()`);
  } finally {
    fs.rmSync(src, { force: true });
    await d.kill(); // no destage: the writes stay in the journal, for the next start to replay
  }
  const journalDir = path.join(dataDir, 'pools', 'hot-0', 'journal');
  assert.ok(fs.readdirSync(journalDir).length > 0, `journal files in ${journalDir}`);
  return { dataDir, journalDir, written };
}

/** Every entry under `dir`: kind, size, mtime (ns) and, for files, a content hash. Two equal snapshots: nothing written, created or deleted. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = fs.lstatSync(p, { bigint: true });
      if (st.isDirectory()) {
        out.set(p, `dir ${st.mtimeNs}`);
        walk(p);
      } else if (name === 'lock.mdb') {
        // LMDB's reader table: shared memory the process holding the index (the held
        // daemon itself) updates as its own read transactions come and go, so only its
        // presence and size are compared (CI saw its bytes change with nothing refused
        // touching the index: the refused commands never open it).
        out.set(p, `lmdb-lock ${st.size}`);
      } else if (st.isFile()) {
        out.set(p, `file ${st.size} ${st.mtimeNs} ${crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`);
      } else out.set(p, `other ${st.mtimeNs}`);
    }
  };
  walk(dir);
  return out;
}

/** Spawns `serve`; resolves at its ready line, its pause line, or its exit (code and stderr). */
function spawnServe(dataDir: string, env: NodeJS.ProcessEnv = {}): { proc: ChildProcess; outcome: Promise<{ kind: 'ready' | 'paused' | 'exit'; line: string; code: number | null; stderr: string }> } {
  const proc = spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, ...SERVE_PORTS], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  spawned.push(proc);
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const outcome = new Promise<{ kind: 'ready' | 'paused' | 'exit'; line: string; code: number | null; stderr: string }>((resolve) => {
    readline.createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (line.startsWith('couchestor ready ')) resolve({ kind: 'ready', line, code: null, stderr });
      if (line.startsWith('couchestor paused start-after-open ')) resolve({ kind: 'paused', line, code: null, stderr });
    });
    proc.once('close', (code) => resolve({ kind: 'exit', line: '', code, stderr }));
  });
  return { proc, outcome };
}

function cli(dataDir: string, ...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args, '--data-dir', dataDir], { encoding: 'utf8' });
}

async function killed(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGKILL');
  await gone;
}

function readBack(d: TestDaemon, lengthBytes: number): Buffer {
  const hex = nbdsh(`import sys\nh.connect_uri(${JSON.stringify(d.exportUri('c1'))})\nsys.stdout.write(h.pread(${lengthBytes}, 0).hex())`);
  return Buffer.from(hex.trim(), 'hex');
}

test('a daemon held mid-start (journal replayed, no daemon.json): offline commands and a second serve are refused naming it, and touch nothing', async () => {
  const { dataDir, journalDir, written } = await dirWithJournal();
  const first = spawnServe(dataDir, { COUCHESTOR_TEST_PAUSE_START: 'after-open' });
  const held = await first.outcome;
  assert.equal(held.kind, 'paused', `first daemon: ${held.stderr}`);
  const pid = first.proc.pid!;
  // The window under test: this daemon's daemon.json not written yet (the file left is the SIGKILLed one's, a dead pid).
  const stateFile = path.join(dataDir, 'daemon.json');
  assert.notEqual(fs.existsSync(stateFile) ? (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { pid: number }).pid : null, pid);
  assert.equal(fs.readFileSync(path.join(dataDir, LOCK_FILE), 'utf8'), `${pid} serve\n`);
  const before = snapshot(dataDir);
  const inUse = `data directory ${dataDir} is in use by the couchestor daemon (pid ${pid})`;

  // Offline paths: each would open the index (and, but fsck and salvage, the journal and destager).
  for (const args of [
    ['volumes', 'create', 'v2', '1M'],
    ['volumes', 'delete', 'c1'],
    ['volumes', 'list'],
    ['pools', 'list'],
    ['fsck'],
    ['journal', 'salvage'],
  ]) {
    const r = cli(dataDir, ...args);
    assert.equal(r.status, 1, `${args.join(' ')}: exit ${r.status}\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(escape(inUse)), args.join(' '));
    assert.match(r.stderr, /starting or stopping/, args.join(' '));
  }
  // Daemon-only commands say the daemon is starting rather than "no daemon".
  for (const args of [['destage'], ['cold'], ['status']]) {
    const r = cli(dataDir, ...args);
    assert.equal(r.status, 1, args.join(' '));
    assert.match(r.stderr, new RegExp(escape(inUse) + ': it is starting'), args.join(' '));
  }

  // A second serve on the same directory: refused before loadConfig, the index or the journal.
  const second = spawnServe(dataDir);
  const refused = await second.outcome;
  assert.equal(refused.kind, 'exit', 'the second daemon must not start');
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, new RegExp(escape(inUse) + ': one process at a time'));
  assert.deepEqual(refused.stderr.trim().split('\n').length, 1, `the refusal is all the second daemon printed (no log line of a start):\n${refused.stderr}`);

  assert.deepEqual(snapshot(dataDir), before, 'no file in the data directory (journal, index, config, lock) changed');
  assert.ok([...before.keys()].some((p) => p.startsWith(journalDir + path.sep)), 'the snapshot covers the journal files');

  // The held daemon dies; the next start owns the directory and the data is as written.
  await killed(first.proc);
  const d = await TestDaemon.start({ dataDir });
  spawned.push(d.proc);
  const vols = JSON.parse(d.cli('volumes', 'list', '--json').stdout) as { name: string }[];
  assert.deepEqual(vols.map((v) => v.name), ['c1'], 'no refused create or delete took effect');
  assert.ok(readBack(d, written.length).equals(written), 'the journaled writes read back');
  await d.stop();
});

test('a SIGKILLed daemon leaves no lock: the next start and an offline command take it at once', async () => {
  const { dataDir } = await dirWithJournal(); // its daemon was SIGKILLed ready, lock file and daemon.json left behind
  const stalePid = Number(fs.readFileSync(path.join(dataDir, LOCK_FILE), 'utf8').split(' ')[0]);
  assert.ok(stalePid > 0 && fs.existsSync(path.join(dataDir, 'daemon.json')), 'stale lock file content and daemon.json from the killed daemon');
  assert.equal(DataDirLock.isHeld(dataDir), false, 'the kernel dropped the killed daemon\'s lock');

  const r = cli(dataDir, 'volumes', 'list', '--json');
  assert.equal(r.status, 0, r.stderr);
  const d = await TestDaemon.start({ dataDir }); // first attempt, no retry
  spawned.push(d.proc);
  assert.equal(fs.readFileSync(path.join(dataDir, LOCK_FILE), 'utf8'), `${d.proc.pid} serve\n`);
  // Killed mid-start as well: the lock still goes with the process.
  await d.kill();
  const held = spawnServe(dataDir, { COUCHESTOR_TEST_PAUSE_START: 'after-open' });
  assert.equal((await held.outcome).kind, 'paused');
  await killed(held.proc);
  const again = await TestDaemon.start({ dataDir });
  spawned.push(again.proc);
  await again.stop();
});

test('a ready daemon: online commands go through its API; a second serve is refused; a stopped daemon releases the lock', async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-lock-'));
  dirs.push(dataDir);
  const d = await TestDaemon.start({ dataDir, config: 'demoVolume: null\n' });
  spawned.push(d.proc);
  const created = d.cli('volumes', 'create', 'v1', '1M');
  assert.equal(created.status, 0, created.stderr);
  assert.equal(d.cli('volumes', 'list').status, 0);
  assert.equal(DataDirLock.isHeld(dataDir), true);

  const second = spawnServe(dataDir);
  const refused = await second.outcome;
  assert.equal(refused.kind, 'exit');
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, new RegExp(escape(`data directory ${dataDir} is in use by the couchestor daemon (pid ${d.info.pid})`)));
  // The refused daemon removed nothing of the running one's.
  assert.equal(JSON.parse(fs.readFileSync(path.join(dataDir, 'daemon.json'), 'utf8')).pid, d.info.pid);

  assert.equal(await d.stop(), 0);
  assert.equal(DataDirLock.isHeld(dataDir), false, 'a clean stop drops the lock');
  const r = cli(dataDir, 'volumes', 'list', '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as { name: string }[]).map((v) => v.name), ['v1']);
});

test('an offline command holding the directory: serve is refused naming it, daemon-only commands say no daemon runs', async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-lock-'));
  dirs.push(dataDir);
  // This test process holds the lock as an offline `volumes create` would (a real OFD lock, seen by other processes).
  const lock = DataDirLock.acquire(dataDir, 'volumes create');
  try {
    const before = snapshot(dataDir);
    const s = spawnServe(dataDir);
    const refused = await s.outcome;
    assert.equal(refused.kind, 'exit');
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(escape(`data directory ${dataDir} is in use by couchestor volumes create (pid ${process.pid})`)));
    assert.deepEqual(snapshot(dataDir), before, 'the refused serve wrote no default configuration');
    const r = cli(dataDir, 'cold');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /in use by couchestor volumes create .*no daemon is running/);
  } finally {
    lock.release();
  }
  const d = await TestDaemon.start({ dataDir });
  spawned.push(d.proc);
  await d.stop();
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
