// The PUT ETag's MD5 computed on a worker thread (objects/md5-offload.ts):
// equal to node's own MD5 for any piece boundaries, for streams interleaved
// at once, with backpressure when the worker is behind, and a dropped
// stream never disturbs the others.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { OffloadedMd5 } from '../src/dataplane/objects/md5-offload.js';

const MiB = 1024 * 1024;
const md5 = (b: Buffer) => createHash('md5').update(b).digest();

/** Deterministic odd piece sizes (1 byte up to ~300 KiB) so batches straddle piece edges. */
function pieces(data: Buffer, seed: number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  let x = seed;
  while (at < data.length) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const n = Math.min(data.length - at, 1 + (x % (300 * 1024)));
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

async function feed(h: OffloadedMd5, parts: Buffer[]): Promise<number> {
  let waits = 0;
  for (const p of parts) {
    const w = h.update(p);
    if (w) {
      waits++;
      await w;
    }
  }
  return waits;
}

describe('offloaded MD5', () => {
  it('matches node MD5 for every size around the 1 MiB batch edge, streams interleaved', async () => {
    const sizes = [0, 1, MiB - 1, MiB, MiB + 1, 9 * MiB + 7];
    const datas = sizes.map((n) => randomBytes(n));
    const digests = await Promise.all(
      datas.map(async (d, i) => {
        const h = new OffloadedMd5();
        await feed(h, pieces(d, i + 1));
        return h.digest();
      }),
    );
    digests.forEach((got, i) => assert.ok(got.equals(md5(datas[i]!)), `size ${sizes[i]}`));
  });

  it('asks the caller to wait once 4 batches are in flight, and the digest is still exact', async () => {
    const data = randomBytes(12 * MiB);
    const h = new OffloadedMd5();
    // 12 whole batches handed over back to back: the worker cannot have
    // returned them all, so update() must ask for a wait at least once.
    const waits = await feed(h, [data.subarray(0, 6 * MiB), data.subarray(6 * MiB)]);
    assert.ok(waits >= 1, 'update() returned no promise while 6 MiB batches were in flight');
    assert.ok((await h.digest()).equals(md5(data)));
  });

  it('a dropped stream leaves the others and later ones exact', async () => {
    const a = randomBytes(3 * MiB + 3);
    const b = randomBytes(2 * MiB);
    const ha = new OffloadedMd5();
    const hb = new OffloadedMd5();
    await feed(ha, pieces(a, 7));
    await feed(hb, pieces(b, 9).slice(0, 3));
    hb.drop();
    assert.ok((await ha.digest()).equals(md5(a)));
    const hc = new OffloadedMd5();
    await feed(hc, pieces(b, 11));
    assert.ok((await hc.digest()).equals(md5(b)));
  });
});
