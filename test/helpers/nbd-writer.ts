// A real NBD client (libnbd's Python binding) writing 1 MiB block after block,
// each written then flushed, for stop and crash tests: block i holds the byte
// (i*7+1)%256 at (i MiB) modulo the export's size, and `acked` is the last
// block whose flush the server acknowledged. And a client that never reads
// its replies (startStuckReader), which holds a daemon's stop.
import { spawn } from 'node:child_process';
import { CLIENT_ENV } from './daemon.js';

const MiB = 1024 * 1024;

const WRITER = `
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
blk = 1024 * 1024
i = 0
while True:
    try:
        h.pwrite(bytes([(i * 7 + 1) % 256]) * blk, (i * blk) % size)
        h.flush()
    except Exception as e:
        print('error', i, e, flush=True)
        break
    print('acked', i, flush=True)
    i += 1
`;

export interface BlockWriter {
  /** The last block whose flush was acknowledged (-1: none yet). */
  readonly acked: number;
  /** Resolves when the client has ended (the server closed the connection). */
  ended: Promise<void>;
  /** Ends the client now. */
  kill(): void;
}

export function startBlockWriter(uri: string): BlockWriter {
  const w = spawn('python3', ['-c', WRITER, uri], { env: CLIENT_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  const state = { acked: -1 };
  let buf = '';
  w.stdout!.on('data', (b: Buffer) => {
    buf += b.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const l of lines) {
      const m = /^acked (\d+)$/.exec(l);
      if (m) state.acked = Number(m[1]);
    }
  });
  const ended = new Promise<void>((r) => w.once('close', () => r()));
  const reap = () => w.kill('SIGKILL');
  process.once('exit', reap);
  void ended.then(() => process.off('exit', reap));
  return {
    get acked() {
      return state.acked;
    },
    ended,
    kill: () => w.kill('SIGKILL'),
  };
}

/** What `base` (the export's bytes before the writer) holds once blocks 0..acked landed; the block after `acked` (in flight) is left as `back` has it. */
export function expectedAfterBlocks(base: Buffer, acked: number, back: Buffer): Buffer {
  const want = Buffer.from(base);
  const size = want.length;
  for (let i = Math.max(0, acked - Math.floor(size / MiB) + 1); i <= acked; i++) want.fill((i * 7 + 1) % 256, (i * MiB) % size, ((i * MiB) % size) + MiB);
  {
    const off = ((acked + 1) * MiB) % size;
    back.copy(want, off, off, off + MiB);
  }
  return want;
}

const STUCK_READER = `
import nbd, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
n = int(sys.argv[2])
size = h.get_size()
bufs = []
for i in range(n):
    b = nbd.Buffer(1024 * 1024)
    h.aio_pread(b, (i * 1024 * 1024) % size)
    bufs.append(b)
print('sent', n, flush=True)
time.sleep(3600)
`;

/**
 * A real NBD client (libnbd) that sends `reads` 1 MiB READs and never reads
 * a reply: the server's replies fill the socket, so a daemon's stop waits
 * out the NBD drain's whole grace period (10 s) for them. Resolves once the
 * reads are sent; kill() ends it.
 */
export async function startStuckReader(uri: string, reads = 256): Promise<{ kill(): void }> {
  const r = spawn('python3', ['-c', STUCK_READER, uri, String(reads)], { env: CLIENT_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  const reap = () => r.kill('SIGKILL');
  process.once('exit', reap);
  r.once('close', () => process.off('exit', reap));
  let out = '';
  await new Promise<void>((resolve, reject) => {
    r.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('sent')) resolve();
    });
    r.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    r.once('close', (code) => reject(new Error(`the stuck reader exited (${code}) before sending its reads: ${out}`)));
  });
  return { kill: () => r.kill('SIGKILL') };
}
