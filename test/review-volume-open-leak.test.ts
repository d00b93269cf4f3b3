// Review of the sliced volume open (3f76da6): an NBD option naming an export
// opens its volume before the option is looked at (NbdServer.prepare), so
// the option's own checks come after the open. An option refused by those
// checks (SET_META_CONTEXT before STRUCTURED_REPLY, an INFO/GO whose
// information count does not match its length) took no loan of the volume it
// had opened: nothing held it and nothing closed it, so each such option
// left a volume open for good (its descriptor and chunk map), as the
// listing and scrub bugs of earlier sessions did until EMFILE. A client
// gone while its option waited for the open had the volume opened again in
// one go when that open failed (a daemon stop: the whole map read during the
// stop). Now the open is a loan the connection gives back once the option
// is answered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { OPT, REP, RawNbd, goData, metaContextData, startNbdTestDaemon } from './helpers/nbd-client.js';
import { processFds } from './helpers/many-volumes.js';

/** Descriptors the daemon holds on volume files. */
const volumeFds = (pid: number): number => processFds(pid).volumeFiles;

async function noVolumeFdWithin(pid: number, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  while (volumeFds(pid) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  return volumeFds(pid);
}

test('NBD options refused after their export was opened leave no volume open', async (t) => {
  const d = await startNbdTestDaemon();
  t.after(() => d.cleanup());
  assert.equal(volumeFds(d.info.pid), 0);
  const c = await RawNbd.connect({ path: d.info.nbd.socketPath });
  t.after(() => c.close());
  await c.greeting();
  c.sendClientFlags(3);
  // SET_META_CONTEXT needs structured replies first: refused.
  c.sendOption(OPT.SET_META_CONTEXT, metaContextData('vol', ['base:allocation']));
  const set = await c.readOptionReplies();
  assert.equal(set.at(-1)!.type, REP.ERR_INVALID, set.at(-1)!.data.toString());
  // An INFO whose information count says 3 with none sent: refused.
  const info = goData('vol');
  info.writeUInt16BE(3, info.length - 2);
  c.sendOption(OPT.INFO, info);
  const bad = await c.readOptionReplies();
  assert.equal(bad.at(-1)!.type, REP.ERR_INVALID, bad.at(-1)!.data.toString());
  c.sendOption(OPT.ABORT);
  await c.closed;
  // A cheap open is given back at once (no linger); a second is slack for the loop.
  assert.equal(await noVolumeFdWithin(d.info.pid, 3_000), 0, 'the volume the refused options opened stayed open with nothing holding it');
  // The daemon serves the volume as before.
  const ok = await RawNbd.connect({ path: d.info.nbd.socketPath });
  t.after(() => ok.close());
  const { sizeBytes } = await ok.handshake('vol');
  assert.equal(sizeBytes, 64 * 1024 * 1024);
  await ok.disconnect();
  assert.equal(await noVolumeFdWithin(d.info.pid, 3_000), 0);
});
