// Protocol abuse over a raw socket: every bad input gets its exact NBD code
// (or a disconnect), only the offending client is affected, and data that
// was acknowledged before stays intact for a client connected meanwhile.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { TestDaemon } from './helpers/daemon.js';
import { CMD, ConnectionClosed, ERRNO, FLAG, IHAVEOPT, OPT, RawNbd, REP, REQUEST_MAGIC, TF, goData, metaContextData } from './helpers/nbd-client.js';

const MiB = 1024 * 1024;
const HOT_CAPACITY_BYTES = 4 * MiB;
// A tiny hot pool (for ENOSPC) next to a roomy warm pool for everything else;
// the six cold pools are what the default 4+2 erasure-coding policy needs.
const CONFIG = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: ${HOT_CAPACITY_BYTES} }
  - { name: warm-0, tier: warm, path: pools/warm-0, capacity: auto }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
`;
const VOLUME_BYTES = 64 * MiB;

let daemon: TestDaemon;
let witness: RawNbd;
const witnessPattern = crypto.randomBytes(256 * 1024);
const WITNESS_OFFSET = 5 * MiB - 100 * 1024; // crosses a chunk boundary

before(async () => {
  daemon = await TestDaemon.start({ config: CONFIG });
  daemon.createVolume('vol', '64M', '--tier', 'warm');
  daemon.createVolume('ro', '64M', '--tier', 'warm', '--read-only');
  daemon.createVolume('tiny', '64M', '--tier', 'hot');
  witness = await RawNbd.connect({ port: daemon.info.nbd.port });
  await witness.handshake('vol', { structured: true });
  assert.equal((await witness.writeAt(WITNESS_OFFSET, witnessPattern)).error, 0);
  assert.equal((await witness.flush()).error, 0);
});

after(async () => {
  witness?.close();
  await daemon?.cleanup();
});

/** The witness connection still works and acknowledged data is intact. */
async function assertWitnessHealthy(): Promise<void> {
  assert.equal(witness.isClosed, false, 'witness connection was closed');
  const r = await witness.readAt(WITNESS_OFFSET, witnessPattern.length);
  assert.equal(r.error, 0);
  assert.ok(r.data.equals(witnessPattern), 'acknowledged data changed');
  const fresh = crypto.randomBytes(4096);
  const off = 40 * MiB + crypto.randomInt(0, 1000) * 4096;
  assert.equal((await witness.writeAt(off, fresh)).error, 0);
  const back = await witness.readAt(off, fresh.length);
  assert.ok(back.data.equals(fresh));
}

async function connect(): Promise<RawNbd> {
  return RawNbd.connect({ port: daemon.info.nbd.port });
}

/** Resolves once the server has closed the connection; fails if it answers instead. */
async function assertDisconnected(c: RawNbd): Promise<void> {
  await assert.rejects(c.read(1), ConnectionClosed);
  await c.closed;
}

test('handshake: unknown client flags close the connection', async () => {
  const c = await connect();
  await c.greeting();
  c.sendClientFlags(0x80000003);
  await assertDisconnected(c);
  await assertWitnessHealthy();
});

test('handshake: a bad option magic closes the connection', async () => {
  const c = await connect();
  await c.greeting();
  c.sendClientFlags(3);
  c.sendOption(OPT.GO, goData('vol'), undefined, IHAVEOPT ^ 1n);
  await assertDisconnected(c);
  await assertWitnessHealthy();
});

test('handshake: an unknown option gets NBD_REP_ERR_UNSUP and haggling continues', async () => {
  const c = await connect();
  await c.greeting();
  c.sendClientFlags(3);
  c.sendOption(0x4242, Buffer.from('whatever'));
  const r = await c.readOptionReply();
  assert.equal(r.opt, 0x4242);
  assert.equal(r.type, REP.ERR_UNSUP);
  c.sendOption(OPT.STARTTLS);
  assert.equal((await c.readOptionReply()).type, REP.ERR_UNSUP);
  c.sendOption(OPT.GO, goData('vol'));
  const go = await c.readOptionReplies();
  assert.equal(go.at(-1)!.type, REP.ACK);
  assert.equal((await c.readAt(0, 512)).error, 0);
  c.close();
  await assertWitnessHealthy();
});

test('handshake: malformed option lengths get NBD_REP_ERR_INVALID and haggling continues', async () => {
  const c = await connect();
  await c.greeting();
  c.sendClientFlags(3);
  const cases: [string, number, Buffer][] = [];
  // GO whose name length runs past the option data.
  const badName = goData('vol');
  badName.writeUInt32BE(1000, 0);
  cases.push(['GO name length past the end', OPT.GO, badName]);
  // GO whose info count does not match the option length.
  const badCount = goData('vol', [1]);
  badCount.writeUInt16BE(5, 4 + 3);
  cases.push(['GO info count mismatch', OPT.GO, badCount]);
  cases.push(['GO shorter than its fixed fields', OPT.GO, Buffer.from([0, 0])]);
  cases.push(['INFO name length past the end', OPT.INFO, badName]);
  cases.push(['LIST with data', OPT.LIST, Buffer.from('x')]);
  cases.push(['STRUCTURED_REPLY with data', OPT.STRUCTURED_REPLY, Buffer.from('x')]);
  cases.push(['LIST_META_CONTEXT with trailing bytes', OPT.LIST_META_CONTEXT, Buffer.concat([metaContextData('vol', ['base:allocation']), Buffer.from('zz')])]);
  const truncated = metaContextData('vol', ['base:allocation']);
  cases.push(['LIST_META_CONTEXT query truncated', OPT.LIST_META_CONTEXT, truncated.subarray(0, truncated.length - 3)]);
  for (const [what, opt, data] of cases) {
    c.sendOption(opt, data);
    const r = await c.readOptionReply();
    assert.equal(r.opt, opt, what);
    assert.equal(r.type, REP.ERR_INVALID, `${what}: got 0x${r.type.toString(16)}`);
  }
  // An option far larger than any real one is consumed and refused (TOO_BIG).
  const bigBytes = 1024 * 1024;
  c.sendOption(OPT.LIST, Buffer.alloc(bigBytes));
  const big = await c.readOptionReply();
  assert.equal(big.type, REP.ERR_TOO_BIG);
  c.sendOption(OPT.GO, goData('vol'));
  assert.equal((await c.readOptionReplies()).at(-1)!.type, REP.ACK);
  assert.equal((await c.readAt(0, 4096)).error, 0);
  c.close();
  await assertWitnessHealthy();
});

test('handshake: NBD_OPT_GO / INFO / SET_META_CONTEXT on an unknown export get NBD_REP_ERR_UNKNOWN', async () => {
  const c = await connect();
  await c.greeting();
  c.sendClientFlags(3);
  c.sendOption(OPT.INFO, goData('no-such-volume'));
  assert.equal((await c.readOptionReply()).type, REP.ERR_UNKNOWN);
  c.sendOption(OPT.GO, goData('no-such-volume'));
  assert.equal((await c.readOptionReply()).type, REP.ERR_UNKNOWN);
  c.sendOption(OPT.STRUCTURED_REPLY);
  assert.equal((await c.readOptionReply()).type, REP.ACK);
  c.sendOption(OPT.SET_META_CONTEXT, metaContextData('no-such-volume', ['base:allocation']));
  assert.equal((await c.readOptionReply()).type, REP.ERR_UNKNOWN);
  c.sendOption(OPT.GO, goData('vol'));
  assert.equal((await c.readOptionReplies()).at(-1)!.type, REP.ACK);
  c.close();
  await assertWitnessHealthy();
});

test('handshake: NBD_OPT_EXPORT_NAME of an unknown export disconnects', async () => {
  const c = await connect();
  await c.greeting();
  c.sendClientFlags(3);
  c.sendOption(OPT.EXPORT_NAME, Buffer.from('no-such-volume'));
  await assertDisconnected(c);
  // The same option on a known export still works (134-byte reply without NO_ZEROES).
  const ok = await connect();
  await ok.greeting();
  ok.sendClientFlags(1);
  ok.sendOption(OPT.EXPORT_NAME, Buffer.from('vol'));
  const reply = await ok.read(134);
  assert.equal(Number(reply.readBigUInt64BE(0)), VOLUME_BYTES);
  assert.equal((await ok.readAt(WITNESS_OFFSET, 16)).data.toString('hex'), witnessPattern.subarray(0, 16).toString('hex'));
  ok.close();
  await assertWitnessHealthy();
});

for (const structured of [false, true]) {
  const mode = structured ? 'structured replies' : 'simple replies';

  test(`transmission (${mode}): unknown command and unknown flags get EINVAL, connection stays usable`, async () => {
    const c = await connect();
    await c.handshake('vol', { structured });
    assert.equal((await c.command(99, 0, 0, 512)).error, ERRNO.EINVAL);
    assert.equal((await c.command(CMD.READ, 0x100, 0, 512)).error, ERRNO.EINVAL);
    assert.equal((await c.command(CMD.FLUSH, FLAG.NO_HOLE, 0, 0)).error, ERRNO.EINVAL);
    // A WRITE with a flag it does not take: its payload must still be consumed.
    assert.equal((await c.command(CMD.WRITE, FLAG.REQ_ONE, 0, 4096, Buffer.alloc(4096, 0xee))).error, ERRNO.EINVAL);
    // DF exists only with structured replies; with them, one unfragmented chunk comes back.
    const df = await c.readAt(WITNESS_OFFSET, 4096, FLAG.DF);
    if (structured) {
      assert.equal(df.error, 0);
      assert.ok(df.data.equals(witnessPattern.subarray(0, 4096)));
    } else {
      assert.equal(df.error, ERRNO.EINVAL);
    }
    // BLOCK_STATUS without a negotiated meta context is invalid.
    assert.equal((await c.command(CMD.BLOCK_STATUS, 0, 0, 4096)).error, ERRNO.EINVAL);
    const r = await c.readAt(WITNESS_OFFSET, 4096);
    assert.equal(r.error, 0);
    assert.ok(r.data.equals(witnessPattern.subarray(0, 4096)), 'the refused write changed data');
    c.close();
    await assertWitnessHealthy();
  });

  test(`transmission (${mode}): requests past the end: read EINVAL, write ENOSPC, stream stays in sync`, async () => {
    const c = await connect();
    const { sizeBytes } = await c.handshake('vol', { structured });
    assert.equal(sizeBytes, VOLUME_BYTES);
    assert.equal((await c.readAt(sizeBytes - 512, 1024)).error, ERRNO.EINVAL);
    assert.equal((await c.readAt(sizeBytes, 1)).error, ERRNO.EINVAL);
    assert.equal((await c.command(CMD.READ, 0, 2n ** 63n, 512)).error, ERRNO.EINVAL);
    assert.equal((await c.command(CMD.READ, 0, 2n ** 64n - 512n, 1024)).error, ERRNO.EINVAL);
    assert.equal((await c.writeAt(sizeBytes - 512, Buffer.alloc(1024, 0xab))).error, ERRNO.ENOSPC);
    assert.equal((await c.command(CMD.WRITE, 0, 2n ** 63n, 4096, Buffer.alloc(4096, 0xab))).error, ERRNO.ENOSPC);
    assert.equal((await c.command(CMD.WRITE_ZEROES, 0, sizeBytes - 512, 1024)).error, ERRNO.ENOSPC);
    assert.equal((await c.command(CMD.TRIM, 0, sizeBytes, 4096)).error, ERRNO.EINVAL);
    assert.equal((await c.command(CMD.CACHE, 0, sizeBytes, 4096)).error, ERRNO.EINVAL);
    // The partial write past the end must not have touched the last in-range bytes.
    const tail = await c.readAt(sizeBytes - 512, 512);
    assert.equal(tail.error, 0);
    assert.ok(tail.data.equals(Buffer.alloc(512)), 'a refused write changed the end of the export');
    const r = await c.readAt(WITNESS_OFFSET, 1024);
    assert.ok(r.data.equals(witnessPattern.subarray(0, 1024)));
    c.close();
    await assertWitnessHealthy();
  });

  test(`transmission (${mode}): oversized requests get EINVAL (a CACHE, no payload, is served); an oversized write payload is consumed`, async () => {
    const c = await connect();
    await c.handshake('vol', { structured });
    const over = 32 * MiB + 4096;
    assert.equal((await c.readAt(0, over)).error, ERRNO.EINVAL);
    assert.equal((await c.command(CMD.CACHE, 0, 0, over)).error, 0);
    // 32 MiB + 4 KiB of payload whose tail looks like a valid request header:
    // if the server did not consume it all, it would parse garbage as requests.
    const payload = Buffer.alloc(over, 0x5a);
    RawNbd.requestHeader(CMD.WRITE, 0, 999n, 0, 4096).copy(payload, over - 4096);
    const write = c.command(CMD.WRITE, 0, 0, over, payload);
    const next = c.readAt(WITNESS_OFFSET, 4096);
    assert.equal((await write).error, ERRNO.EINVAL);
    const r = await next;
    assert.equal(r.error, 0);
    assert.ok(r.data.equals(witnessPattern.subarray(0, 4096)), 'the next request on the same connection failed or saw changed data');
    const zero = await c.readAt(0, 8192);
    assert.ok(zero.data.equals(Buffer.alloc(8192)), 'the refused oversized write changed data');
    c.close();
    await assertWitnessHealthy();
  });

  test(`transmission (${mode}): writes, trims and zeroes to a read-only export get EPERM`, async () => {
    const c = await connect();
    const { flags } = await c.handshake('ro', { structured });
    assert.ok(flags & TF.READ_ONLY, 'read-only flag not advertised');
    assert.equal(flags & TF.SEND_TRIM, 0);
    assert.equal((await c.writeAt(0, Buffer.alloc(4096, 1))).error, ERRNO.EPERM);
    assert.equal((await c.writeAt(0, Buffer.alloc(4096, 1), FLAG.FUA)).error, ERRNO.EPERM);
    assert.equal((await c.command(CMD.TRIM, 0, 0, MiB)).error, ERRNO.EPERM);
    assert.equal((await c.command(CMD.WRITE_ZEROES, 0, 0, 4096)).error, ERRNO.EPERM);
    const r = await c.readAt(0, 4096);
    assert.equal(r.error, 0);
    assert.ok(r.data.equals(Buffer.alloc(4096)));
    assert.equal((await c.flush()).error, 0);
    c.close();
    await assertWitnessHealthy();
  });

  test(`transmission (${mode}): a bad request magic disconnects only that client`, async () => {
    const c = await connect();
    await c.handshake('vol', { structured });
    c.write(RawNbd.requestHeader(CMD.READ, 0, 1n, 0, 512, REQUEST_MAGIC ^ 0xff));
    await assertDisconnected(c);
    await assertWitnessHealthy();
  });
}

test('ENOSPC when the pool is full; allocated chunks stay writable and intact', async () => {
  const c = await connect();
  await c.handshake('tiny', { structured: true });
  const chunks = HOT_CAPACITY_BYTES / MiB;
  const written: Buffer[] = [];
  for (let i = 0; i < chunks; i++) {
    const data = crypto.randomBytes(8192);
    // Each write lands in a distinct 1 MiB chunk, away from its start.
    assert.equal((await c.writeAt(i * MiB + 12345, data)).error, 0, `chunk ${i}`);
    written.push(data);
  }
  assert.equal((await c.writeAt(chunks * MiB + 12345, crypto.randomBytes(8192))).error, ERRNO.ENOSPC);
  assert.equal((await c.writeAt(10 * MiB, Buffer.alloc(1, 1), FLAG.FUA)).error, ERRNO.ENOSPC);
  // A write spanning an allocated and an unallocated chunk needs a new chunk too.
  assert.equal((await c.writeAt(chunks * MiB - 4096, crypto.randomBytes(8192))).error, ERRNO.ENOSPC);
  assert.equal((await c.command(CMD.WRITE_ZEROES, FLAG.NO_HOLE, 20 * MiB, 4096)).error, ERRNO.ENOSPC);
  // Rewriting inside allocated chunks still works.
  const again = crypto.randomBytes(4096);
  assert.equal((await c.writeAt(2 * MiB, again)).error, 0);
  assert.equal((await c.flush()).error, 0);
  for (let i = 0; i < chunks; i++) {
    const r = await c.readAt(i * MiB + 12345, 8192);
    assert.ok(r.data.equals(written[i]!), `chunk ${i} data changed after ENOSPC`);
  }
  assert.ok((await c.readAt(2 * MiB, 4096)).data.equals(again));
  // Unallocated chunks still read as zeros.
  assert.ok((await c.readAt(chunks * MiB, 16384)).data.equals(Buffer.alloc(16384)));
  // Trimming a whole chunk frees room for a new one.
  assert.equal((await c.command(CMD.TRIM, 0, 3 * MiB, MiB)).error, 0);
  assert.equal((await c.writeAt(30 * MiB, Buffer.alloc(4096, 7))).error, 0);
  assert.ok((await c.readAt(3 * MiB + 12345, 8192)).data.equals(Buffer.alloc(8192)), 'trimmed chunk does not read as zeros');
  c.close();
  await assertWitnessHealthy();
});
