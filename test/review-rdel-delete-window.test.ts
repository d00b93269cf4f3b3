// Review of 645e1b4 (volume delete refuses an export in use): from its in-use
// check to its end a delete has taken the volume (isBeingDeleted: the NBD
// server answers it as an unknown export). A forced delete stays there up to
// 10 s while its clients are disconnected. A resize or a release asked
// meanwhile went ahead and was answered as done (PATCH 200 with the new size),
// and the volume was gone a moment later: both are refused now, 409
// VolumeInUse "volume v is being deleted", as a migrate through the API
// (answered 200 Done); once a delete fails they work again.
// And the NBD server's close (a daemon stop: its clients' requests in flight
// answered, up to 10 s) took it out of the delete's in-use check first: a
// delete then went ahead and the request in flight was answered EIO
// ("volume v was closed"); it stays in until its clients are gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildApi } from '../src/control/api.js';
import { holdIndexDelete, openColdTierManager, openHotManager, tempManager } from './helpers/volume.js';
import { RawNbd } from './helpers/nbd-client.js';
import { NbdServer } from '../src/dataplane/nbd/server.js';
import { VolumeInUse } from '../src/dataplane/errors.js';

const MiB = 1024 * 1024;

test('a resize or release of a volume a delete has taken is refused (409) and the delete goes on; after a failed delete they pass', async (t) => {
  const { m } = await tempManager(t, 'couchestor-rdel-window-', openHotManager);
  const api = buildApi(m);
  t.after(() => api.close());
  await m.createVolume({ name: 'v', sizeBytes: MiB });
  // Open (as with a client's writes): the resize takes it in this turn.
  m.giveBack(m.borrowVolume('v'));

  const held = holdIndexDelete(m);
  const deleting = m.deleteVolume('v');
  await held.atIndex;
  assert.ok(m.isBeingDeleted('v'));
  const resize = await api.inject({ method: 'PATCH', url: '/v1/volumes/v', payload: { sizeBytes: 2 * MiB } });
  assert.equal(resize.statusCode, 409, `resize during the delete: ${resize.statusCode} ${resize.body}`);
  assert.match(resize.json<{ message: string }>().message, /^volume v is being deleted$/);
  const release = await api.inject({ method: 'POST', url: '/v1/volumes/v/release' });
  assert.equal(release.statusCode, 409, `release during the delete: ${release.statusCode} ${release.body}`);
  held.release();
  await deleting;
  held.restore();
  assert.equal(m.getVolumeRecord('v'), undefined);
  assert.equal((await api.inject({ method: 'PATCH', url: '/v1/volumes/v', payload: { sizeBytes: 2 * MiB } })).statusCode, 404);

  // A delete that fails at its index write gives the volume back: resized as asked.
  await m.createVolume({ name: 'v', sizeBytes: MiB });
  const meta = m.meta as unknown as { deleteVolume(rec: unknown): Promise<void> };
  const real = meta.deleteVolume;
  meta.deleteVolume = () => Promise.reject(Object.assign(new Error('MDB_MAP_FULL: index full (injected)'), { code: 'ENOSPC' }));
  await assert.rejects(m.deleteVolume('v'), /index full/);
  meta.deleteVolume = real;
  assert.equal(m.isBeingDeleted('v'), false);
  const after = await api.inject({ method: 'PATCH', url: '/v1/volumes/v', payload: { sizeBytes: 2 * MiB } });
  assert.equal(after.statusCode, 200, after.body);
  assert.equal(after.json<{ sizeBytes: number }>().sizeBytes, 2 * MiB);
});

test('while the NBD server drains its clients (a daemon stop) a delete of a volume one still has requests in flight on is refused, and the request is answered', async (t) => {
  const { m } = await tempManager(t, 'couchestor-rdel-stop-', openHotManager);
  await m.createVolume({ name: 'v', sizeBytes: MiB });
  const nbd = new NbdServer({ manager: m });
  const { port } = await nbd.listenTcp(0);
  let closing: Promise<void> | null = null;
  // A failed assertion leaves the FLUSH held: let it go, or the close waits on it for good.
  let letGo: () => void = () => undefined;
  t.after(() => {
    letGo();
    return closing ?? nbd.close();
  });
  const c = await RawNbd.connect({ port });
  await c.handshake('v');
  assert.equal((await c.writeAt(0, Buffer.alloc(65536, 0x5a))).error, 0);
  // The client's FLUSH held in flight until the test lets it go.
  const vol = m.openVolumes().find((x) => x.name === 'v')!;
  const realFlush = vol.flush.bind(vol);
  let entered!: () => void;
  const inFlush = new Promise<void>((r) => (entered = r));
  const gate = new Promise<void>((r) => (letGo = r));
  vol.flush = () => {
    entered();
    return gate.then(realFlush);
  };
  const flush = c.flush();
  await inFlush;
  // The stop's NBD step: no further request read, the FLUSH in flight to be answered.
  closing = nbd.close();
  await assert.rejects(m.deleteVolume('v'), (err: unknown) => err instanceof VolumeInUse && err.nbdClients.length === 1, 'deleted under a request in flight');
  letGo();
  assert.equal((await flush).error, 0, 'the FLUSH in flight answered an error');
  await closing;
  await c.closed;
  // The client gone: the delete passes.
  await m.deleteVolume('v');
  assert.equal(m.getVolumeRecord('v'), undefined);
});

test('a migrate asked through the API while a delete has the volume is refused (409), not answered Done', async (t) => {
  const { m } = await tempManager(t, 'couchestor-rdel-migrate-', openColdTierManager);
  const api = buildApi(m);
  t.after(() => api.close());
  await m.createVolume({ name: 'v', sizeBytes: 4 * MiB });
  const held = holdIndexDelete(m);
  const deleting = m.deleteVolume('v');
  await held.atIndex;
  const move = await api.inject({ method: 'POST', url: '/v1/volumes/v/migrate', payload: { tier: 'cold' } });
  assert.equal(move.statusCode, 409, `migrate during the delete: ${move.statusCode} ${move.body}`);
  assert.match(move.json<{ message: string }>().message, /^volume v is being deleted$/);
  held.release();
  await deleting;
  held.restore();
  assert.equal(m.getVolumeRecord('v'), undefined);
});
