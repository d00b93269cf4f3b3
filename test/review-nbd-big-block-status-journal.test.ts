// BLOCK_STATUS on a cold volume whose journal holds many chunks costs the
// range asked, not the journal. A TRIM (mkfs's discard, blkdiscard, fstrim)
// on a cold volume journals one zero record per chunk: 65,536 for 64 GiB of
// 1 MiB chunks, a million for 1 TiB, until the destager drains them. Each
// request listed every journaled chunk of the volume first (to find the
// groups holding one): ~0.9 ms per request here at 16,384 chunks, ~7 ms at
// 262,144, on the event loop, for a request over one chunk (REQ_ONE, qemu's
// per-request queries, CACHE's hole skipping). Now a short journal is listed
// (at most a group's chunks, and no more than the range's), a long one is
// asked chunk by chunk over the range only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openColdTierManager, tempManager, writeVolume } from './helpers/volume.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SIZE = 64 * GiB;
const CALLS = 1000;
/** CPU for CALLS one-chunk requests: before, ~900 ms (load ~14); now a few ms. */
const CPU_BOUND_MS = 150;

test('BLOCK_STATUS over one chunk of a cold volume with 65,536 journaled chunks costs the chunk, not the journal', async (t) => {
  const { m } = await tempManager(t, 'couchestor-bs-journal-', (dir) => openColdTierManager(dir, true));
  await m.createVolume({ name: 'v', sizeBytes: SIZE, tier: 'cold' });
  const vol = m.openVolume('v');
  // The whole volume trimmed: one zero record per 1 MiB chunk, all journaled.
  const step = 4 * GiB - MiB;
  for (let off = 0; off < SIZE; off += step) await vol.trim(off, Math.min(step, SIZE - off), false);
  await writeVolume(vol, 5 * GiB + 4096, Buffer.alloc(4096, 0xab));
  assert.equal(m.cold!.journal.dirtyChunks(vol.rec.id).length, SIZE / MiB);

  const answers = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < CALLS; i++) answers.push(vol.blockStatus(((i * 7919) % (SIZE / MiB)) * MiB + 512, MiB - 1024, 1));
  const cpu = process.cpuUsage(cpu0);
  // Journaled (zeros, until destaged): data, as every chunk with records.
  for (const ext of answers) assert.deepEqual(ext, [{ lengthBytes: MiB - 1024, flags: 0 }]);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  assert.ok(cpuMs < CPU_BOUND_MS, `${CALLS} one-chunk BLOCK_STATUS took ${cpuMs.toFixed(0)} ms of CPU (bound ${CPU_BOUND_MS} ms)`);

  // The whole volume, as a client maps it: data everywhere, every reply within its range.
  let covered = 0;
  while (covered < SIZE) {
    const n = Math.min(SIZE - covered, 2 ** 32 - 4096);
    const ext = vol.blockStatus(covered, n, 1024);
    assert.equal(ext.length, 1, `at ${covered}: ${JSON.stringify(ext)}`);
    assert.equal(ext[0]!.flags, 0);
    assert.ok(ext[0]!.lengthBytes > 0 && ext[0]!.lengthBytes <= n);
    covered += ext[0]!.lengthBytes;
  }
});
