// Strings the server sends during option haggling stay within the NBD
// limit (proto.md "Conventions": a string MUST be no longer than 4096
// bytes, error messages included), whatever the client sent: libnbd drops
// the connection on a longer one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { nbdsh } from './helpers/daemon.js';
import type { TestDaemon } from './helpers/daemon.js';
import { OPT, RawNbd, REP, goData, metaContextData, startNbdTestDaemon } from './helpers/nbd-client.js';

const MAX_STRING_BYTES = 4096;
let daemon: TestDaemon;

before(async () => {
  daemon = await startNbdTestDaemon();
});

after(async () => {
  await daemon?.cleanup();
});

test('nbdsh: OPT_INFO / LIST_META_CONTEXT for an unknown 4096-byte export name fail cleanly, then OPT_GO works', () => {
  const out = nbdsh(`
import errno, nbd
h.set_opt_mode(True)
h.connect_uri(${JSON.stringify(daemon.exportUri('vol'))})
def err_of(fn):
    try:
        fn()
        return "ok"
    except nbd.Error as e:
        return e.errno
for name in ["x" * 4096, "\\u00e9" * 2048]:
    h.set_export_name(name)
    print(err_of(h.opt_info))
    print(err_of(lambda: h.opt_list_meta_context(lambda ctx: 0)))
h.set_export_name("vol")
h.opt_go()
h.pwrite(b"ok", 0)
print(h.pread(2, 0).decode())
`);
  // libnbd maps ERR_UNKNOWN to ENOENT for OPT_INFO and ENOTSUP for LIST_META_CONTEXT.
  assert.deepEqual(out.trim().split('\n'), ['ENOENT', 'ENOTSUP', 'ENOENT', 'ENOTSUP', 'ok']);
});

test('raw: option error replies naming a long export are at most 4096 bytes of whole UTF-8 characters', async () => {
  const c = await RawNbd.connect({ port: daemon.info.nbd.port });
  await c.greeting();
  c.sendClientFlags(3);
  c.sendOption(OPT.STRUCTURED_REPLY);
  assert.equal((await c.readOptionReply()).type, REP.ACK);
  // 3-byte characters, so a byte cut at 4096 would land inside one.
  for (const name of ['y'.repeat(60_000), '\u20ac'.repeat(20_000)]) {
    for (const [opt, data] of [
      [OPT.INFO, goData(name)],
      [OPT.GO, goData(name)],
      [OPT.SET_META_CONTEXT, metaContextData(name, ['base:allocation'])],
    ] as const) {
      c.sendOption(opt, data);
      const r = await c.readOptionReply();
      assert.equal(r.type, REP.ERR_UNKNOWN, `option ${opt}`);
      assert.ok(r.data.length > 0 && r.data.length <= MAX_STRING_BYTES, `option ${opt}: ${r.data.length}-byte message`);
      assert.equal(Buffer.from(r.data.toString('utf8'), 'utf8').equals(r.data), true, `option ${opt}: message is not valid UTF-8`);
    }
  }
  // Haggling carries on.
  c.sendOption(OPT.GO, goData('vol'));
  assert.equal((await c.readOptionReplies()).at(-1)!.type, REP.ACK);
  c.close();
});
