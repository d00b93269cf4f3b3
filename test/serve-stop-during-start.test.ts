// A stop (SIGTERM, SIGINT) at any point of a daemon's start-up: the handlers
// are there from the first instant, the start ends at its next step (none
// cut in the middle), closes what it opened and exits 128+signal with one
// line naming the step; the next start is clean and every acknowledged
// write reads back. Before, a SIGTERM during the start killed the process
// wherever it was (no handler yet), and one sent to PID 1 of a container
// (a pod deleted during a journal replay) was ignored until the SIGKILL.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_EC_POLICY_YAML } from '../src/config.js';
import { DataDirLock } from '../src/data-dir-lock.js';
import { spawnServe, TestDaemon, type StartingDaemon } from './helpers/daemon.js';
import { MANUAL_DESTAGE_CONFIG } from './helpers/cold.js';
import { nbdcopyIn, nbdcopyOut } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
/** From the signal to the exit, with the start held at a step that writes nothing or between two short steps. */
const STOP_DEADLINE_MS = 10_000;

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/**
 * A data directory with the cold tier on (destage only on request) and
 * `lengthBytes` of random data written to cold volume c1 and left in the
 * journal (the daemon SIGKILLed): the next start replays it.
 */
async function dirWithJournal(lengthBytes: number): Promise<{ dataDir: string; written: Buffer }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-stopstart-'));
  dirs.push(dataDir);
  fs.mkdirSync(path.join(dataDir, 'policies'));
  fs.writeFileSync(path.join(dataDir, 'policies', 'standard-ec.yaml'), DEFAULT_EC_POLICY_YAML);
  const d = await TestDaemon.start({ dataDir, config: MANUAL_DESTAGE_CONFIG + `  journalCapacityBytes: ${Math.max(256 * MiB, 2 * lengthBytes)}\n  destageThresholdPercent: 100\n` });
  const written = crypto.randomBytes(lengthBytes);
  const src = path.join(dataDir, 'src.bin');
  fs.writeFileSync(src, written);
  try {
    d.createVolume('c1', `${Math.max(8, lengthBytes / MiB)}M`, '--tier', 'cold');
    nbdcopyIn(src, d.exportUri('c1')); // nbdcopy flushes at the end: every byte acknowledged
  } finally {
    fs.rmSync(src, { force: true });
    await d.kill();
  }
  return { dataDir, written };
}

/** The next start on `dataDir`: ready, and c1 reads back `written`. */
async function startsCleanWith(dataDir: string, written: Buffer): Promise<void> {
  assert.equal(DataDirLock.isHeld(dataDir), false, 'the stopped start released the lock');
  const d = await TestDaemon.start({ dataDir });
  try {
    const back = nbdcopyOut(d.exportUri('c1'), path.join(dataDir, 'back.bin'), written.length);
    assert.ok(back.equals(written), 'every acknowledged write reads back');
    assert.equal(await d.stop(), 0);
  } finally {
    await d.cleanup().catch(() => undefined);
  }
}

/** Sends `signal` and waits for the exit: 128+signal, the one line naming `step`, within the deadline. */
async function stopsWith(s: StartingDaemon, signal: NodeJS.Signals, step: RegExp, pid = s.proc.pid!): Promise<{ elapsedMs: number; step: string }> {
  const sentMs = performance.now();
  process.kill(pid, signal);
  const deadline = new Promise<'deadline'>((r) => setTimeout(() => r('deadline'), STOP_DEADLINE_MS).unref());
  const out = await Promise.race([s.exited, deadline]);
  if (out === 'deadline') {
    process.kill(pid, 'SIGKILL'); // the daemon itself (under unshare, its child: killing unshare alone leaves it running)
    s.proc.kill('SIGKILL');
    assert.fail(`no exit ${STOP_DEADLINE_MS} ms after ${signal}:\n${s.stderr()}`);
  }
  assert.equal(out.signal, null, `exited by itself, not killed by ${out.signal}:\n${out.stderr}`);
  assert.equal(out.code, 128 + os.constants.signals[signal], out.stderr);
  const m = new RegExp(`^couchestor: stopped \\(${signal}\\) during start-up at (.*); what it had opened is closed$`, 'm').exec(out.stderr);
  assert.ok(m, `the stop line:\n${out.stderr}`);
  assert.match(m[1]!, step);
  return { elapsedMs: out.atMs - sentMs, step: m[1]! };
}

test('SIGTERM and SIGINT while the start is held after the journal replay (index open, destager running): exit 143 / 130 at once, the next start clean', { timeout: 120_000 }, async () => {
  const { dataDir, written } = await dirWithJournal(4 * MiB);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    const s = spawnServe(dataDir, { env: { COUCHESTOR_TEST_PAUSE_START: 'after-open' } });
    await s.line(/^couchestor paused start-after-open /);
    const { elapsedMs } = await stopsWith(s, signal, /^the test pause after-open$/);
    assert.ok(elapsedMs < STOP_DEADLINE_MS, `${elapsedMs} ms`);
    assert.equal(fs.existsSync(path.join(dataDir, 'daemon.json')), false, 'no daemon.json of a daemon that never served');
  }
  await startsCleanWith(dataDir, written);
});

test('SIGTERM with the start held as each of its steps begins: it ends there, exit 143; the next start clean', { timeout: 120_000 }, async () => {
  const { dataDir, written } = await dirWithJournal(4 * MiB);
  const steps = ['the pool locks', 'the index', 'the pools', 'the cold tier policy', 'the scan for the highest destaged seq', 'the journal replay', 'the cold pool usage', 'the interrupted releases', 'the NBD listeners', 'the read cache', 'the HTTP listeners', 'ready'];
  for (const step of steps) {
    const s = spawnServe(dataDir, { env: { COUCHESTOR_TEST_PAUSE_START: `step:${step}` } });
    await s.line(new RegExp(`^couchestor paused start-step ${step} `));
    await stopsWith(s, 'SIGTERM', new RegExp(`^${step}$`));
  }
  await startsCleanWith(dataDir, written);
});

test('SIGTERM during the replay of a big journal: the replay ends, the start stops right after it, the writes are all there', { timeout: 120_000 }, async () => {
  const { dataDir, written } = await dirWithJournal(96 * MiB);
  const s = spawnServe(dataDir, { env: { COUCHESTOR_TEST_START_STEPS: '1' } });
  await s.line(/^couchestor start-step the journal replay$/);
  const replayStartedMs = performance.now();
  const { elapsedMs, step } = await stopsWith(s, 'SIGTERM', /^the (journal replay|cold pool usage)$/);
  process.stdout.write(`# signal to exit ${elapsedMs.toFixed(0)} ms, stopped at ${step} (replay begun ${(performance.now() - replayStartedMs).toFixed(0)} ms before the exit)\n`);
  await startsCleanWith(dataDir, written);
});

test('PID 1 of a pid namespace (a container): SIGTERM during the start ends it (Node ignores SIGTERM there without a handler)', { timeout: 120_000, skip: process.getuid?.() !== 0 && 'unshare -p needs root' }, async () => {
  const { dataDir, written } = await dirWithJournal(4 * MiB);
  const s = spawnServe(dataDir, { env: { COUCHESTOR_TEST_PAUSE_START: 'after-open' }, wrap: ['unshare', '-fp', '--mount-proc'] });
  const paused = await s.line(/^couchestor paused start-after-open /);
  assert.equal((JSON.parse(paused.slice(paused.indexOf('{'))) as { pid: number }).pid, 1, 'the daemon is PID 1 in its namespace');
  // unshare's one child: the daemon, seen from here.
  const child = Number(fs.readFileSync(`/proc/${s.proc.pid}/task/${s.proc.pid}/children`, 'utf8').trim());
  assert.ok(child > 1, 'the daemon\'s pid outside its namespace');
  await stopsWith(s, 'SIGTERM', /^the test pause after-open$/, child);
  await startsCleanWith(dataDir, written);
});
