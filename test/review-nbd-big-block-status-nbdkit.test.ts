// BLOCK_STATUS against the named peer on the same layout: nbdkit's file
// plugin over a sparse tmpfs file (4 KiB pages) and a volume of 4 KiB chunks
// (16 MiB groups, 20 of them and a partial one) get the same 4 KiB-aligned
// writes (data, zeros, whole groups), WRITE_ZEROES with and without NO_HOLE
// and TRIMs, from one nbdsh script; after each, both maps (whole export as a
// client walks it, REQ_ONE at group edges, random ranges) must say the same
// data and holes page by page (but for pages zeroed with NO_HOLE: data here,
// a hole on tmpfs), and at the end nbdinfo --map must print the same map.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { TestDaemon, nbdsh } from './helpers/daemon.js';
import { MetaStore } from '../src/dataplane/meta/store.js';

const MiB = 1024 * 1024;
const GROUP = 4096 * 4096;
const SIZE = 20 * GROUP + 12 * 4096;

test('BLOCK_STATUS of a 4 KiB-chunk volume matches nbdkit file on a sparse file through the same writes, zeroes and trims', async (t) => {
  let d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  d.createVolume('v', `${SIZE / 4096 * 4}K`, '--tier', 'hot');
  assert.equal(await d.stop(), 0);
  const meta = MetaStore.open(d.dataDir);
  try {
    const rec = meta.volumes.get('v')!;
    await meta.volumes.put('v', { ...rec, chunkSizeBytes: 4096 });
    await meta.durable();
  } finally {
    await meta.close();
  }
  d = await TestDaemon.start({ dataDir: d.dataDir });
  const shm = fs.mkdtempSync('/dev/shm/couchestor-bs-nbdkit-');
  t.after(() => fs.rmSync(shm, { recursive: true, force: true }));
  const file = path.join(shm, 'peer.img');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, SIZE);
  const out = nbdsh(`
import nbd, random
P = 4096
G = ${GROUP}
def open_(uri=None, cmd=None):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if uri: h.connect_uri(uri)
    else: h.connect_command(cmd)
    return h
a = open_(uri=${JSON.stringify(d.unixUri('v'))})
b = open_(cmd=['nbdkit', '-s', '--exit-with-parent', 'file', ${JSON.stringify(file)}])
size = a.get_size()
assert size == b.get_size() == ${SIZE}, (size, b.get_size())
rnd = random.Random(5)

def pages(h, off, n, flags=0):
    """Per-page hole flag over what the reply covers."""
    got = []
    def cb(meta, o, entries, err):
        for i in range(0, len(entries), 2):
            got.append((entries[i], entries[i + 1] & 1))
        return 0
    h.block_status(n, off, cb, flags=flags)
    if flags: assert len(got) == 1, got
    out = []
    for ln, hole in got:
        assert ln % P == 0 or off + sum(x[0] for x in got) == off + n, (off, n, got)
        out += [hole] * ((ln + P - 1) // P)
    return out

def whole(h):
    out = []
    off = 0
    while off < size:
        n = min(size - off, (1 << 32) - P)
        p = pages(h, off, n)
        assert 0 < len(p) <= n // P
        out += p
        off += len(p) * P
    return out

# Pages zeroed with NO_HOLE: data here (the chunks were written with zeros),
# a hole in nbdkit's map (tmpfs has no ZERO_RANGE: nbdkit punches the hole
# and fallocates the pages, which SEEK_DATA skips). Both read as zeros.
nohole = set()
def mark(off, n, on):
    for i in range(off // P, (off + n + P - 1) // P):
        if on: nohole.add(i)
        else: nohole.discard(i)

def compare(step):
    wa, wb = whole(a), whole(b)
    bad = [i for i in range(len(wa)) if wa[i] != wb[i] and not (i in nohole and wa[i] == 0)]
    assert not bad, (step, bad[:10], [(wa[i], wb[i]) for i in bad[:3]])
    edges = [g * G for g in range(size // G + 1)]
    for e in edges + [e - P for e in edges if e > 0] + [rnd.randrange(size // P) * P for _ in range(8)]:
        if e >= size: continue
        for n in [P, 2 * G + 5 * P, (1 << 32) - P]:
            n = min(n, size - e)
            pa, pb = pages(a, e, n, nbd.CMD_FLAG_REQ_ONE), pages(b, e, n, nbd.CMD_FLAG_REQ_ONE)
            # REQ_ONE: one extent each, both within the range; the shorter is a prefix of the other's flag.
            assert pa == wa[e // P:e // P + len(pa)] and pb == wb[e // P:e // P + len(pb)], (step, e, n, len(pa), len(pb))
            assert len(pa) <= n // P and len(pb) <= n // P

def both(fn):
    fn(a); fn(b)

compare('empty')
for step in range(14):
    r = rnd.random()
    off = rnd.randrange(size // P) * P
    if r < 0.3:
        n = min(size - off, rnd.randrange(1, 64) * P)
        data = bytes(n) if rnd.random() < 0.2 else rnd.randbytes(n)
        both(lambda h: h.pwrite(data, off))
        mark(off, n, False)
        what = 'write'
    elif r < 0.4:
        g = rnd.randrange(size // G + 1)
        off = g * G
        n = min(G, size - off)
        data = rnd.randbytes(n)
        both(lambda h: h.pwrite(data, off))
        mark(off, n, False)
        what = 'fill group'
    elif r < 0.6:
        n = min(size - off, rnd.randrange(1, 3 * G // P) * P)
        both(lambda h: h.zero(n, off))
        mark(off, n, False)
        what = 'zero'
    elif r < 0.7:
        n = min(size - off, rnd.randrange(1, 256) * P)
        both(lambda h: h.zero(n, off, nbd.CMD_FLAG_NO_HOLE))
        mark(off, n, True)
        what = 'zero no-hole'
    else:
        n = min(size - off, rnd.randrange(1, 3 * G // P) * P)
        both(lambda h: h.trim(n, off))
        mark(off, n, False)
        what = 'trim'
    both(lambda h: h.flush())
    compare((step, what, off, n))
# The pages zeroed with NO_HOLE written alike on both: the maps must then be equal.
for i in sorted(nohole):
    data = rnd.randbytes(P)
    both(lambda h: h.pwrite(data, i * P))
nohole.clear()
both(lambda h: h.flush())
compare('end')
assert whole(a) == whole(b)
a.shutdown(); b.shutdown()
print('ok')
`).trim();
  assert.equal(out, 'ok');
  // nbdinfo --map prints the same map (merged extents) from both.
  const map = (args: string[]) => execFileSync('nbdinfo', ['--map', ...args], { encoding: 'utf8', env: { ...process.env, PATH: `/usr/bin:${process.env.PATH}` } });
  assert.equal(map([d.unixUri('v')]), map(['--', '[', 'nbdkit', '--exit-with-parent', 'file', file, ']']));
});
