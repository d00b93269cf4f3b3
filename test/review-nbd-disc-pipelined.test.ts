// Review of 6d7ec8d (a disconnect closes the socket once our FIN is queued,
// instead of waiting for the client's): replies to requests pipelined ahead
// of NBD_CMD_DISC in the same segment still all reach the client before the
// close, including one answered synchronously while that segment is parsed
// (held back and written after the DISC was handled).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import type { TestDaemon } from './helpers/daemon.js';
import { CMD, RawNbd, startNbdTestDaemon } from './helpers/nbd-client.js';

let daemon: TestDaemon | undefined;

after(async () => {
  await daemon?.cleanup();
});

test('READs pipelined with NBD_CMD_DISC in one segment: every READ is answered, then the server closes', async () => {
  daemon = await startNbdTestDaemon();
  const data = Buffer.alloc(512 * 1024, 7);
  for (const n of [1, 2, 64]) {
    const c = await RawNbd.connect({ port: daemon.info.nbd.port });
    await c.handshake('vol', { structured: true });
    assert.equal((await c.writeAt(0, data)).error, 0);
    c.socket.cork();
    const reads = Array.from({ length: n }, (_, i) => c.readAt((i % 16) * 4096, i % 2 === 0 ? 4096 : 200 * 1024));
    c.socket.write(RawNbd.requestHeader(CMD.DISC, 0, 999n, 0, 0));
    c.socket.uncork();
    const rs = await Promise.all(reads.map((p) => p.then((r) => r, (e: Error) => e)));
    for (const [i, r] of rs.entries()) {
      assert.ok(!(r instanceof Error), `${n} reads + DISC: read ${i} got no reply (${(r as Error).message})`);
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(data.subarray(0, r.data.length)), `read ${i}: wrong data`);
    }
    await c.closed;
  }
});
