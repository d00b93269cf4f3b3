// A client that sends NBD_OPT_GO for a volume with a big chunk map waits while
// the volume opens (its map read a slice at a time: seconds at 300k entries).
// The connection did not read its socket meanwhile, so a client that gave up
// and hung up was not seen until the open ended: it still counted as having
// the export open, and a plain delete of the volume was refused (VolumeInUse)
// for that long. Now the socket is read (up to a bound) during the open: the
// hang-up is seen at once, the delete goes ahead while the open is still
// running, and the open, when it ends, lends the gone client nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nbdOverBigHotVolume } from './helpers/big-chunk-map.js';
import { OPT, REP, RawNbd, goData } from './helpers/nbd-client.js';

const CHUNKS = 300_000;
const CHUNK_BYTES = 4096;

/** Resolves once `cond()` holds, checked every few ms; rejects after `timeoutMs`. */
async function until(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test(`a client that hangs up while its export's volume (${CHUNKS} chunk entries) opens stops counting at once: a delete right after is not refused`, async (t) => {
  const { manager, nbd } = await nbdOverBigHotVolume(t, 'couchestor-nbd-del-gone-', CHUNKS, CHUNK_BYTES);
  const { port } = await nbd.listenTcp(0);

  const c = await RawNbd.connect({ port });
  await c.greeting();
  c.sendClientFlags(3);
  c.sendOption(OPT.GO, goData('big'));
  // The option waits on the open: the client counts as opening the export.
  await until(() => nbd.clientsOf('big').length === 1, 'the server to take the NBD_OPT_GO');
  assert.equal(manager.isOpen('big'), false, 'premise: the volume is still opening');
  c.close();
  await until(() => nbd.clientsOf('big').length === 0 || manager.isOpen('big'), 'the hang-up to be seen or the open to end');
  // Seen while the open runs (before: only once it had ended, the client lent the volume meanwhile).
  assert.equal(manager.isOpen('big'), false, 'the client that hung up counted as attached until the open ended');
  assert.deepEqual(nbd.clientsOf('big'), []);
  // The delete as the API runs it (`couchestor volumes delete big`), in the same turn: not refused.
  await manager.deleteVolume('big', { background: true });
  assert.equal(manager.getVolumeRecord('big'), undefined);
  assert.equal(nbd.connectionCount, 0);

  // The open gave up with the record gone: a new client is told the export is unknown, nothing holds a volume.
  const c2 = await RawNbd.connect({ port });
  t.after(() => c2.close());
  await c2.greeting();
  c2.sendClientFlags(3);
  c2.sendOption(OPT.GO, goData('big'));
  const reply = (await c2.readOptionReplies()).at(-1)!;
  assert.equal(reply.type, REP.ERR_UNKNOWN, `NBD_OPT_GO answered 0x${reply.type.toString(16)} ${reply.data.toString()}`);
  assert.equal(manager.isOpen('big'), false);
});
