// The couchestor command waits for the daemon's answer as long as the work
// takes: a migrate or rebuild answers only when done, and fetch() (undici)
// gave up after 300 s without response headers. The daemon is held with
// SIGSTOP for a few seconds (its answer as late as a long move's), and the
// command runs with undici's timeouts cut from 300 s to 1 ms by a preload,
// so the 300 s case takes seconds: the command must still print the answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { STATE_FILE } from '../src/daemon.js';
import { CLI, TestDaemon } from './helpers/daemon.js';

/** How long the daemon is held once the request reached it: longer than undici's timers need to fire a 1 ms timeout (they tick every second). */
const HOLD_MS = 3_000;

/**
 * Puts a byte relay in front of the daemon's API (daemon.json's API port
 * rewritten: the lock and pid stay the daemon's, so the command still takes
 * it for the live daemon) and resolves `requestSeen` when the command's
 * request reaches it. The hold and the kill start there, not at the spawn: on
 * a loaded machine the command can take seconds to start, and a request sent
 * after the daemon was resumed (or killed) would test nothing (or fail).
 */
async function relayApi(d: TestDaemon): Promise<{ requestSeen: Promise<void>; close: () => void }> {
  let seen!: () => void;
  const requestSeen = new Promise<void>((r) => (seen = r));
  const sockets = new Set<net.Socket>();
  const relay = net.createServer((client) => {
    const up = net.connect(d.info.api.port, d.info.api.host);
    for (const s of [client, up]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    client.once('data', () => seen());
    client.pipe(up);
    up.pipe(client);
    // The daemon killed with the request unread resets: the command sees its side closed, as without the relay.
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  const stateFile = path.join(d.dataDir, STATE_FILE);
  const state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { api: { host: string; port: number } };
  state.api = { host: '127.0.0.1', port: (relay.address() as net.AddressInfo).port };
  fs.writeFileSync(stateFile, JSON.stringify(state));
  return {
    requestSeen,
    close: () => {
      for (const s of sockets) s.destroy();
      relay.close();
    },
  };
}

/** A preload that replaces fetch's global dispatcher with one whose header and body timeouts are 1 ms. */
function writeShortTimeoutPreload(dir: string): string {
  const file = path.join(dir, 'undici-1ms.mjs');
  fs.writeFileSync(
    file,
    `await fetch('http://127.0.0.1:1').catch(() => {});
const key = Symbol.for('undici.globalDispatcher.1');
const Agent = globalThis[key].constructor;
globalThis[key] = new Agent({ headersTimeout: 1, bodyTimeout: 1 });
`,
  );
  return file;
}

function runCli(preload: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  const child = spawn(process.execPath, ['--import', preload, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 })));
}

test('a command whose answer comes late (daemon busy past any client timeout) still gets it', async (t) => {
  const d = await TestDaemon.start();
  t.after(() => d.cleanup());
  d.createVolume('late', '16M');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cli-late-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const preload = writeShortTimeoutPreload(dir);
  const relay = await relayApi(d);
  t.after(() => relay.close());

  d.proc.kill('SIGSTOP');
  let resumed = false;
  let cont: NodeJS.Timeout | undefined;
  t.after(() => {
    clearTimeout(cont);
    d.proc.kill('SIGCONT');
  });
  void relay.requestSeen.then(() => {
    cont = setTimeout(() => {
      resumed = true;
      d.proc.kill('SIGCONT');
    }, HOLD_MS);
  });
  const r = await runCli(preload, ['volumes', 'list', '--json', '--data-dir', d.dataDir]);
  assert.ok(resumed, `the command returned before the daemon was resumed (${r.ms} ms): ${r.stderr}`);
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  const list = JSON.parse(r.stdout) as { name: string }[];
  assert.ok(
    list.some((v) => v.name === 'late'),
    r.stdout,
  );
  assert.ok(r.ms >= HOLD_MS, `answered after ${r.ms} ms`);
});

test('a daemon killed before it answers makes the command fail with a message, not hang', async (t) => {
  const d = await TestDaemon.start();
  t.after(() => d.cleanup());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-cli-killed-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const preload = writeShortTimeoutPreload(dir);
  const relay = await relayApi(d);
  t.after(() => relay.close());

  d.proc.kill('SIGSTOP');
  // Stopped, the daemon cannot answer before the kill.
  void relay.requestSeen.then(() => d.kill());
  const r = await runCli(preload, ['volumes', 'list', '--data-dir', d.dataDir]);
  assert.equal(r.code, 1, r.stderr);
  // The message names the call and what happened (before: "socket hang up", the call unnamed).
  assert.match(r.stderr, /GET \/v1\/volumes: it closed the connection before its answer was complete/);
});
