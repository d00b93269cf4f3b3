// The NBD server driven by real clients nobody here wrote: nbdinfo, nbdsh
// (libnbd), nbdcopy, qemu-img and fio. Each test asserts the bytes, extents
// and error codes those clients see.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLIENT_ENV, TestDaemon, nbdsh, run } from './helpers/daemon.js';

const MiB = 1024 * 1024;
let daemon: TestDaemon;
let scratch: string;

before(async () => {
  daemon = await TestDaemon.start();
  scratch = fs.mkdtempSync(path.join(daemon.dataDir, 'scratch-'));
  daemon.createVolume('ops', '64M');
  daemon.createVolume('ro', '64M', '--read-only');
  daemon.createVolume('copy-tcp', '256M');
  daemon.createVolume('copy-unix', '256M');
  daemon.createVolume('qemu', '64M');
  daemon.createVolume('fio', '64M');
});

after(async () => {
  await daemon?.cleanup();
});

/** Python prelude for nbdsh: connect `h` with base:allocation and small helpers. */
function prelude(uri: string): string {
  return `
import errno, json, os, nbd
h.add_meta_context("base:allocation")
h.connect_uri(${JSON.stringify(uri)})
MiB = 1024 * 1024
def errno_of(fn, *a):
    try:
        fn(*a)
        return 0
    except nbd.Error as e:
        return getattr(errno, e.errno)  # libnbd names the errno; the test wants the number
def extents(off, count, flags=0):
    out = []
    def cb(ctx, o, entries, err):
        if ctx == "base:allocation":
            out.extend(entries)
        return 0
    h.block_status(count, off, cb, flags)
    return [[out[i], out[i + 1]] for i in range(0, len(out), 2)]
`;
}

test('nbdinfo --json reports size, flags, meta contexts and block sizes', () => {
  const info = JSON.parse(run('nbdinfo', ['--json', daemon.exportUri('ops')])) as {
    protocol: string;
    structured: boolean;
    exports: Record<string, unknown>[];
  };
  assert.equal(info.protocol, 'newstyle-fixed');
  assert.equal(info.structured, true);
  const e = info.exports[0]!;
  assert.equal(e['export-name'], 'ops');
  assert.equal(e['export-size'], 64 * MiB);
  assert.deepEqual(e['contexts'], ['base:allocation']);
  for (const k of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero', 'can_multi_conn', 'can_cache', 'can_df']) {
    assert.equal(e[k], true, k);
  }
  assert.equal(e['is_read_only'], false);
  assert.equal(e['block_size_minimum'], 1);
  assert.equal(e['block_size_preferred'], 4096);
  assert.equal(e['block_size_maximum'], 32 * MiB);

  const ro = JSON.parse(run('nbdinfo', ['--json', daemon.exportUri('ro')])) as { exports: Record<string, unknown>[] };
  assert.equal(ro.exports[0]!['is_read_only'], true);
  assert.equal(ro.exports[0]!['can_trim'], false);
  assert.equal(ro.exports[0]!['can_zero'], false);

  const list = JSON.parse(run('nbdinfo', ['--list', '--json', daemon.uri])) as { exports: { 'export-name': string; description: string }[] };
  const names = list.exports.map((x) => x['export-name']).sort();
  for (const n of ['copy-tcp', 'copy-unix', 'fio', 'ops', 'qemu', 'ro']) assert.ok(names.includes(n), `--list lacks ${n}`);
  assert.match(list.exports.find((x) => x['export-name'] === 'ops')!.description, /ops/);
});

test('nbdsh: pread/pwrite/trim/zero/flush/cache/block_status give the right bytes and extents', () => {
  const out = nbdsh(
    prelude(daemon.exportUri('ops')) +
      `
r = {}
a = os.urandom(3 * MiB)
h.pwrite(a, 512 * 1024)                      # chunk 0 tail, chunks 1-2, chunk 3 head
r["readback"] = h.pread(3 * MiB, 512 * 1024) == a
r["unwritten_zero"] = h.pread(MiB, 8 * MiB) == bytes(MiB)
r["ext_after_write"] = extents(0, 8 * MiB)
r["req_one_data"] = extents(0, 8 * MiB, nbd.CMD_FLAG_REQ_ONE)
r["req_one_hole"] = extents(6 * MiB, 4096, nbd.CMD_FLAG_REQ_ONE)
h.flush()
fua = os.urandom(4096)
h.pwrite(fua, 3 * MiB + 8192, nbd.CMD_FLAG_FUA)
r["fua_readback"] = h.pread(4096, 3 * MiB + 8192) == fua
a = a[:3 * MiB - 512 * 1024 + 8192] + fua + a[3 * MiB - 512 * 1024 + 8192 + 4096:]

h.trim(MiB, MiB)                             # whole chunk 1
r["trim_zero"] = h.pread(MiB, MiB) == bytes(MiB)
r["trim_neighbours"] = h.pread(512 * 1024, 512 * 1024) == a[:512 * 1024] and h.pread(MiB, 2 * MiB) == a[1536 * 1024:2560 * 1024]
r["ext_after_trim"] = extents(0, 4 * MiB)

h.zero(MiB, 2 * MiB)                         # whole chunk 2, may punch a hole
r["zero_reads_zero"] = h.pread(MiB, 2 * MiB) == bytes(MiB)
r["ext_after_zero"] = extents(2 * MiB, MiB)
h.zero(MiB, 2 * MiB, nbd.CMD_FLAG_NO_HOLE)   # whole chunk 2, must stay allocated
r["no_hole_reads_zero"] = h.pread(MiB, 2 * MiB) == bytes(MiB)
r["ext_after_no_hole"] = extents(2 * MiB, MiB)
h.zero(4096, 3 * MiB + 100)                  # unaligned, inside chunk 3
r["partial_zero"] = h.pread(4096, 3 * MiB + 100) == bytes(4096)
r["partial_zero_rest"] = h.pread(400, 3 * MiB + 4196) == a[3 * MiB - 512 * 1024 + 4196:3 * MiB - 512 * 1024 + 4596]

b = os.urandom(MiB)
h.pwrite(b, 0)                               # chunk 0 full of data again
h.pwrite(b"x" * 4096, 2 * MiB + 4096)        # chunk 2 holds data in its middle
before_fast = h.pread(3 * MiB, 0)
# Zeroing chunk 2 partially needs data writes: FAST_ZERO must refuse, changing nothing.
r["fast_zero_slow_errno"] = errno_of(h.zero, 2 * MiB + 8192, 0, nbd.CMD_FLAG_FAST_ZERO)
r["fast_zero_slow_unchanged"] = h.pread(3 * MiB, 0) == before_fast
# Whole chunks (allocated or not) are zeroed by metadata alone: FAST_ZERO succeeds.
r["fast_zero_fast_errno"] = errno_of(h.zero, 3 * MiB, 3 * MiB, nbd.CMD_FLAG_FAST_ZERO)
r["fast_zero_fast_reads_zero"] = h.pread(3 * MiB, 3 * MiB) == bytes(3 * MiB)
r["ext_after_fast_zero"] = extents(3 * MiB, 3 * MiB)
r["cache_errno"] = errno_of(h.cache, 2 * MiB, 0)
r["flush_errno"] = errno_of(h.flush)
r["final_chunk0"] = h.pread(MiB, 0) == b

ro = nbd.NBD()
ro.set_strict_mode(0)                        # let the server, not libnbd, refuse
ro.connect_uri(${JSON.stringify(daemon.exportUri('ro'))})
r["ro_is_read_only"] = ro.is_read_only()
r["ro_pwrite_errno"] = errno_of(ro.pwrite, b"y" * 4096, 0)
r["ro_trim_errno"] = errno_of(ro.trim, MiB, 0)
r["ro_zero_errno"] = errno_of(ro.zero, 4096, 0)
r["ro_reads_zero"] = ro.pread(4096, 0) == bytes(4096)
print(json.dumps(r))
`,
  );
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as Record<string, unknown>;
  const EPERM = 1;
  const ENOTSUP = 95;
  assert.equal(r.readback, true);
  assert.equal(r.unwritten_zero, true);
  // Allocation is tracked per 1 MiB chunk: chunks 0-3 hold data, the rest are holes reading as zeros.
  assert.deepEqual(r.ext_after_write, [[4 * MiB, 0], [4 * MiB, 3]]);
  assert.deepEqual(r.req_one_data, [[4 * MiB, 0]]);
  assert.deepEqual(r.req_one_hole, [[4096, 3]]);
  assert.equal(r.fua_readback, true);
  assert.equal(r.trim_zero, true);
  assert.equal(r.trim_neighbours, true);
  assert.deepEqual(r.ext_after_trim, [[MiB, 0], [MiB, 3], [2 * MiB, 0]]);
  assert.equal(r.zero_reads_zero, true);
  assert.deepEqual(r.ext_after_zero, [[MiB, 3]]);
  assert.equal(r.no_hole_reads_zero, true);
  assert.deepEqual(r.ext_after_no_hole, [[MiB, 0]]);
  assert.equal(r.partial_zero, true);
  assert.equal(r.partial_zero_rest, true);
  assert.equal(r.fast_zero_slow_errno, ENOTSUP);
  assert.equal(r.fast_zero_slow_unchanged, true, 'a refused FAST_ZERO changed the export');
  assert.equal(r.fast_zero_fast_errno, 0);
  assert.equal(r.fast_zero_fast_reads_zero, true);
  assert.deepEqual(r.ext_after_fast_zero, [[3 * MiB, 3]]);
  assert.equal(r.cache_errno, 0);
  assert.equal(r.flush_errno, 0);
  assert.equal(r.final_chunk0, true);
  assert.equal(r.ro_is_read_only, true);
  assert.equal(r.ro_pwrite_errno, EPERM);
  assert.equal(r.ro_trim_errno, EPERM);
  assert.equal(r.ro_zero_errno, EPERM);
  assert.equal(r.ro_reads_zero, true);
});

test('nbdcopy: a random 256 MiB image in and out, byte-exact, over TCP and the Unix socket', () => {
  const img = path.join(scratch, 'random.img');
  fs.writeFileSync(img, crypto.randomBytes(256 * MiB));
  const sha = (f: string) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
  const want = sha(img);
  // In over one transport, out over the other, for both volumes.
  const legs: [string, string, string][] = [
    ['copy-tcp', daemon.exportUri('copy-tcp'), daemon.unixUri('copy-tcp')],
    ['copy-unix', daemon.unixUri('copy-unix'), daemon.exportUri('copy-unix')],
  ];
  for (const [name, inUri, outUri] of legs) {
    run('nbdcopy', ['--flush', img, inUri]);
    const back = path.join(scratch, `${name}.out`);
    run('nbdcopy', [outUri, back]);
    assert.equal(fs.statSync(back).size, 256 * MiB);
    assert.equal(sha(back), want, `${name}: bytes differ after the round trip`);
    fs.rmSync(back);
  }
  fs.rmSync(img);
});

test('qemu-img info, convert and compare against an export', () => {
  const info = JSON.parse(run('qemu-img', ['info', '--output=json', daemon.exportUri('qemu')])) as { 'virtual-size': number; format: string };
  assert.equal(info['virtual-size'], 64 * MiB);
  assert.equal(info.format, 'raw');
  const img = path.join(scratch, 'qemu.img');
  // Half data, half zeros so qemu-img exercises both writes and zeroing.
  const data = Buffer.concat([crypto.randomBytes(32 * MiB), Buffer.alloc(32 * MiB)]);
  fs.writeFileSync(img, data);
  run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', img, daemon.exportUri('qemu')]);
  const same = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, daemon.exportUri('qemu')], { env: CLIENT_ENV, encoding: 'utf8' });
  assert.equal(same.status, 0, `qemu-img compare: ${same.stdout}${same.stderr}`);
  assert.match(same.stdout, /Images are identical/);
  // One changed byte at 40 MiB + 7: compare must notice it (qemu names the sector start).
  const fd = fs.openSync(img, 'r+');
  fs.writeSync(fd, Buffer.from([0x42]), 0, 1, 40 * MiB + 7);
  fs.closeSync(fd);
  const differ = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, daemon.exportUri('qemu')], { env: CLIENT_ENV, encoding: 'utf8' });
  assert.equal(differ.status, 1, `qemu-img compare should report a difference: ${differ.stdout}${differ.stderr}`);
  assert.match(differ.stdout, new RegExp(`Content mismatch at offset ${40 * MiB}!`));
  fs.rmSync(img);
});

test('fio (nbd engine) randwrite with crc32c verify at iodepth 16', () => {
  const out = run('fio', [
    '--name=verify',
    '--ioengine=nbd',
    `--uri=${daemon.exportUri('fio')}`,
    '--rw=randwrite',
    '--bsrange=4k-128k',
    '--size=48M',
    '--iodepth=16',
    '--verify=crc32c',
    '--do_verify=1',
    '--verify_fatal=1',
    '--output-format=json',
  ]);
  const res = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] };
  const job = res.jobs[0]!;
  assert.equal(job.error, 0);
  assert.ok(job.write.io_bytes >= 48 * MiB, `wrote ${job.write.io_bytes} bytes`);
  // The verify phase reads everything back and checks every block's crc32c.
  assert.ok(job.read.io_bytes >= 48 * MiB, `verified ${job.read.io_bytes} bytes`);
});
