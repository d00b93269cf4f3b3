// Review of 3b17344 (NBD shutdown answers requests in flight): a FUA WRITE
// the daemon answers with success while it is shutting down must be on disk
// after the restart, on a hot volume (fdatasync) and on a cold one (journal
// sync: the daemon closes the journal after the NBD drain, never before). The
// clients keep sending to the end: requests read after the stop began are
// not served (no reply), never answered as done and then lost.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { CLIENT_ENV, run, TestDaemon } from './helpers/daemon.js';
import crypto from 'node:crypto';
import { RawNbd, startNbdTestDaemon } from './helpers/nbd-client.js';
import { createVolume } from './helpers/cold.js';

const MiB = 1024 * 1024;
const daemons: TestDaemon[] = [];
const clients: ChildProcess[] = [];

after(async () => {
  for (const c of clients) c.kill('SIGKILL');
  for (const d of daemons) await d.cleanup();
});

/** Slot i of 64 KiB holds sha256(name:i) repeated: each slot is written once, FUA. */
const writer = (uri: string, slots: number, name: string) => `
import hashlib, json
def pattern(i):
    return hashlib.sha256(("${name}:%d" % i).encode()).digest() * 2048
h.connect_uri(${JSON.stringify(uri)})
inflight = {}
acked = []
nxt = 0
told = False
try:
    while nxt < ${slots} or inflight:
        while nxt < ${slots} and len(inflight) < 32:
            inflight[h.aio_pwrite(pattern(nxt), nxt * 65536, flags=nbd.CMD_FLAG_FUA)] = nxt
            nxt += 1
        h.poll(1000)
        for c in list(inflight):
            if h.aio_command_completed(c):
                acked.append(inflight.pop(c))
        if not told and len(acked) >= 40:
            print("go", flush=True)
            told = True
except nbd.Error:
    pass
for c in list(inflight):
    try:
        if h.aio_command_completed(c):
            acked.append(inflight.pop(c))
    except nbd.Error:
        pass
if not told:
    print("go", flush=True)
print(json.dumps({"acked": acked, "unanswered": len(inflight), "issued": nxt}), flush=True)
`;

const checker = (uri: string, name: string, acked: number[]) => `
import hashlib
def pattern(i):
    return hashlib.sha256(("${name}:%d" % i).encode()).digest() * 2048
h.connect_uri(${JSON.stringify(uri)})
bad = [i for i in ${JSON.stringify(acked)} if h.pread(65536, i * 65536) != pattern(i)]
print(bad)
`;

test('SIGTERM while clients stream FUA writes to a hot and a cold volume: every write answered OK is there after the restart', async () => {
  const d = await startNbdTestDaemon();
  daemons.push(d);
  await createVolume(d, 'cvol', 32 * MiB, 'cold');
  const vols = [
    { name: 'vol', slots: 1024 },
    { name: 'cvol', slots: 512 },
  ];
  const procs = vols.map((v) => {
    const p = spawn('nbdsh', ['-c', writer(d.exportUri(v.name), v.slots, v.name)], { env: CLIENT_ENV, stdio: ['ignore', 'pipe', 'inherit'] });
    clients.push(p);
    return readline.createInterface({ input: p.stdout! })[Symbol.asyncIterator]();
  });
  for (const lines of procs) assert.equal((await lines.next()).value, 'go');
  assert.equal(await d.stop(), 0);
  const results: { acked: number[]; unanswered: number; issued: number }[] = [];
  for (const lines of procs) results.push(JSON.parse((await lines.next()).value as string) as (typeof results)[number]);
  // The stop came while the writers were going: some writes never got an answer.
  assert.ok(results.some((r) => r.issued > r.acked.length), `the stop came after every write was answered: ${JSON.stringify(results.map((r) => [r.issued, r.acked.length]))}`);

  const again = await TestDaemon.start({ dataDir: d.dataDir });
  daemons.push(again);
  vols.forEach((v, i) => {
    assert.ok(results[i]!.acked.length >= 40);
    assert.equal(run('nbdsh', ['-c', checker(again.exportUri(v.name), v.name, results[i]!.acked)]).trim(), '[]', `${v.name}: acknowledged FUA writes lost`);
  });
});

// Since 0ef031f a second signal during a stop means "exit now" (README, Stopping): the FLUSH in
// flight may be cut. What must hold is the durability contract: a FLUSH answered with success
// covers its writes after the restart; one cut (no answer) acknowledged nothing.
test('SIGTERM twice while a FLUSH is in flight: the second ends the daemon by SIGTERM at once; a FLUSH it answered covers its writes after the restart', async () => {
  const d = await startNbdTestDaemon();
  daemons.push(d);
  const c = await RawNbd.connect({ port: d.info.nbd.port });
  await c.handshake('vol', { structured: true });
  const data = crypto.randomBytes(4 * MiB);
  for (let off = 0; off < 48 * MiB; off += data.length) assert.equal((await c.writeAt(off, data)).error, 0);
  const flush = c.flush();
  // The READ's reply proves the FLUSH ahead of it was read and started.
  assert.equal((await c.readAt(0, 4096)).error, 0);
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => d.proc.once('exit', (code, signal) => r({ code, signal })));
  d.proc.kill('SIGTERM');
  d.proc.kill('SIGTERM');
  const answered = await flush.then((x) => `error ${x.error}`, (err: Error) => err.name);
  await c.closed;
  const exit = await ended;
  // Either the stop finished before the second signal was handled (exit 0), or it ended by it.
  assert.ok(exit.code === 0 || exit.signal === 'SIGTERM', `the daemon ended ${JSON.stringify(exit)}:\n${d.stderr}`);
  assert.ok(answered === 'error 0' || answered === 'ConnectionClosed', `the FLUSH is answered with success or not at all, never with an error: ${answered}`);
  const again = await TestDaemon.start({ dataDir: d.dataDir });
  daemons.push(again);
  const r = await RawNbd.connect({ port: again.info.nbd.port });
  await r.handshake('vol', { structured: true });
  // The restart is clean whichever way the stop ended; the answered FLUSH's bytes are there.
  if (answered === 'error 0') assert.ok((await r.readAt(44 * MiB, 4 * MiB)).data.equals(data), 'a FLUSH answered with success covers its writes');
  else assert.equal((await r.readAt(44 * MiB, 4 * MiB)).error, 0);
  r.socket.destroy();
});
