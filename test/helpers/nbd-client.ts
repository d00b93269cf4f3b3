// A small raw-socket NBD client for tests: writes protocol bytes itself so
// tests can send malformed input, pipeline requests and model durability.
// Written from the NBD protocol document, independent of src/dataplane/nbd.
import net from 'node:net';
import { spawn } from 'node:child_process';
import readline from 'node:readline';
import { CLIENT_ENV, TestDaemon } from './daemon.js';

/**
 * Python for nbdsh scripts (libnbd's `nbd` module in scope): `allocation_map(h, size)` walks
 * base:allocation over [0, size) with BLOCK_STATUS requests of at most 4 GiB - 4 KiB, each
 * request covering something and nothing past what it asked, and returns the extents merged
 * into runs of equal flags ([length, flags & 3] lists) and the number of requests. Interpolate it
 * at column 0.
 */
export const PY_ALLOCATION_MAP = `
def allocation_map(h, size):
    got = []
    def cb(meta, off, entries, err):
        assert meta == nbd.CONTEXT_BASE_ALLOCATION
        for i in range(0, len(entries), 2):
            got.append([entries[i], entries[i + 1] & 3])
        return 0
    off = 0
    requests = 0
    while off < size:
        n = min(size - off, (1 << 32) - 4096)
        first = len(got)
        h.block_status(n, off, cb)
        covered = sum(e[0] for e in got[first:])
        assert 0 < covered <= n, (off, n, covered)
        off += covered
        requests += 1
    merged = []
    for n, f in got:
        if merged and merged[-1][1] == f:
            merged[-1][0] += n
        else:
            merged.append([n, f])
    return merged, requests
`;

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPT_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 } as const;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_UNKNOWN: 0x80000006,
  ERR_TOO_BIG: 0x80000009,
} as const;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
export const FLAG = { FUA: 1, NO_HOLE: 2, DF: 4, REQ_ONE: 8, FAST_ZERO: 16 } as const;
export const ERRNO = { EPERM: 1, EIO: 5, EINVAL: 22, ENOSPC: 28, ENOTSUP: 95 } as const;
export const TF = { HAS_FLAGS: 1, READ_ONLY: 2, SEND_FLUSH: 4, SEND_FUA: 8, SEND_TRIM: 32, SEND_WRITE_ZEROES: 64, SEND_DF: 128, CAN_MULTI_CONN: 256, SEND_CACHE: 1024, SEND_FAST_ZERO: 2048 } as const;

const REPLY_TYPE_OFFSET_DATA = 1;
const REPLY_TYPE_OFFSET_HOLE = 2;
const REPLY_TYPE_BLOCK_STATUS = 5;
const REPLY_FLAG_DONE = 1;

/**
 * Starts a daemon with one hot pool and the six cold pools the default 4+2 policy needs (no demo volume), serving a 64 MiB hot volume `vol`.
 * `extraConfig`: more couchestor.yaml lines (whole top-level sections, e.g. `limits: { inflightBytes: 8388608 }`); `env`: added to the daemon's.
 */
export async function startNbdTestDaemon(extraConfig = '', env?: NodeJS.ProcessEnv): Promise<TestDaemon> {
  const config = `pools:
  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }
${[0, 1, 2, 3, 4, 5].map((i) => `  - { name: cold-${i}, tier: cold, path: pools/cold-${i}, capacity: auto }\n`).join('')}demoVolume: null
${extraConfig}`;
  const daemon = await TestDaemon.start({ config, env });
  daemon.createVolume('vol', '64M', '--tier', 'hot');
  return daemon;
}

/** An nbdsh process holding one libnbd connection open between the test's steps (attachedNbdsh). */
export interface AttachedNbdsh {
  /** Evaluates a python expression (`h` is the handle, `hashlib` imported): its repr, or `error: <message>` for an nbd.Error. */
  step(expr: string): Promise<string>;
  /** Ends stdin (nbdsh exits, its socket closed) and resolves with its exit code. */
  close(): Promise<number | null>;
}

/**
 * A real libnbd client that stays connected to `uri` while the test acts on
 * the daemon: nbdsh connects, runs `setup` (python statements), and then
 * evaluates one line at a time from stdin (step), so the test orders the
 * client's requests against its own calls without sleeps.
 */
export async function attachedNbdsh(uri: string, setup = ''): Promise<AttachedNbdsh> {
  const script = `
import sys, hashlib
h.connect_uri(${JSON.stringify(uri)})
exec(${JSON.stringify(setup)})
print('ready', flush=True)
for line in sys.stdin:
    try:
        print(repr(eval(line)), flush=True)
    except nbd.Error as e:
        print('error: ' + str(e), flush=True)
`;
  const p = spawn('nbdsh', ['-c', script], { env: CLIENT_ENV, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => p.once('close', (code) => resolve(code)));
  const lines = readline.createInterface({ input: p.stdout! })[Symbol.asyncIterator]();
  const next = async (): Promise<string> => {
    const r = await lines.next();
    if (r.done === true) throw new Error(`nbdsh exited (${await exited}) before answering: ${stderr}`);
    return r.value as string;
  };
  const first = await next();
  if (first !== 'ready') throw new Error(`nbdsh setup printed ${JSON.stringify(first)}: ${stderr}`);
  return {
    step: (expr) => {
      p.stdin!.write(expr + '\n');
      return next();
    },
    close: () => {
      p.stdin!.end();
      return exited;
    },
  };
}

/** Lets the event loop run so the next socket write leaves as its own segment. */
export function nextTurn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

export class ConnectionClosed extends Error {
  override name = 'ConnectionClosed';
}

export interface OptionReply {
  opt: number;
  type: number;
  data: Buffer;
}

export interface CommandResult {
  /** NBD error number; 0 on success. */
  error: number;
  /** READ payload (holes filled with zeros); empty otherwise. */
  data: Buffer;
  /** BLOCK_STATUS extents [lengthBytes, flags]. */
  extents: [number, number][];
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  resolve: (r: CommandResult) => void;
  reject: (e: Error) => void;
  result: CommandResult;
}

/** Buffered reader over a socket: `read(n)` resolves with exactly n bytes. */
export class RawNbd {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private closedErr: Error | null = null;
  readonly closed: Promise<void>;
  private structured = false;
  private nextCookie = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private readerRunning = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.closedErr = new ConnectionClosed('server closed the connection');
        this.wake();
        for (const p of this.pending.values()) p.reject(this.closedErr);
        this.pending.clear();
        resolve();
      });
    });
    socket.on('error', () => undefined);
  }

  /** Connects to `{port}` on 127.0.0.1 or to a Unix socket `{path}`. */
  static connect(target: { port: number } | { path: string }): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const s = 'port' in target ? net.connect(target.port, '127.0.0.1') : net.connect(target.path);
      s.setNoDelay(true);
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RawNbd(s));
      });
    });
  }

  get isClosed(): boolean {
    return this.closedErr !== null;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  close(): void {
    this.socket.destroy();
  }

  private wake(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.buffered >= w.n) {
      this.waiter = null;
      w.resolve(this.take(w.n));
    } else if (this.closedErr) {
      this.waiter = null;
      w.reject(this.closedErr);
    }
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks.length = 0;
    const out = all.subarray(0, n);
    if (all.length > n) this.chunks.push(all.subarray(n));
    this.buffered -= n;
    return out;
  }

  /** Exactly n bytes; rejects with ConnectionClosed if the server hangs up first. */
  read(n: number): Promise<Buffer> {
    if (this.waiter) throw new Error('concurrent reads on RawNbd');
    if (this.buffered >= n) return Promise.resolve(this.take(n));
    if (this.closedErr) return Promise.reject(this.closedErr);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  // ---- handshake ---------------------------------------------------------

  /** Reads the server greeting; returns the handshake flags. */
  async greeting(): Promise<number> {
    const b = await this.read(18);
    if (b.readBigUInt64BE(0) !== NBDMAGIC || b.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('bad server greeting');
    return b.readUInt16BE(16);
  }

  sendClientFlags(flags: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags >>> 0, 0);
    this.write(b);
  }

  sendOption(opt: number, data: Buffer = Buffer.alloc(0), lengthOverride?: number, magic: bigint = IHAVEOPT): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(magic, 0);
    h.writeUInt32BE(opt >>> 0, 8);
    h.writeUInt32BE(lengthOverride ?? data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  async readOptionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new Error(`bad option reply magic ${h.readBigUInt64BE(0).toString(16)}`);
    const len = h.readUInt32BE(16);
    const data = len > 0 ? Buffer.from(await this.read(len)) : Buffer.alloc(0);
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
  }

  /** Option replies up to and including the final ACK or error. */
  async readOptionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      out.push(r);
      if (r.type === REP.ACK || r.type >= 0x80000000) return out;
    }
  }

  /**
   * Full fixed-newstyle handshake with NBD_OPT_GO; optionally negotiates
   * structured replies and base:allocation first.
   */
  async handshake(exportName: string, opts: { structured?: boolean; allocation?: boolean } = {}): Promise<{ sizeBytes: number; flags: number }> {
    await this.greeting();
    this.sendClientFlags(3);
    if (opts.structured || opts.allocation) {
      this.sendOption(OPT.STRUCTURED_REPLY);
      const r = await this.readOptionReplies();
      if (r.at(-1)!.type !== REP.ACK) throw new Error('structured replies refused');
      this.structured = true;
    }
    if (opts.allocation) {
      this.sendOption(OPT.SET_META_CONTEXT, metaContextData(exportName, ['base:allocation']));
      const r = await this.readOptionReplies();
      if (!r.some((x) => x.type === REP.META_CONTEXT)) throw new Error('base:allocation refused');
    }
    this.sendOption(OPT.GO, goData(exportName));
    const replies = await this.readOptionReplies();
    const last = replies.at(-1)!;
    if (last.type !== REP.ACK) throw new Error(`NBD_OPT_GO failed: 0x${last.type.toString(16)} ${last.data.toString()}`);
    const info = replies.find((r) => r.type === REP.INFO && r.data.readUInt16BE(0) === 0);
    if (!info) throw new Error('no NBD_INFO_EXPORT');
    return { sizeBytes: Number(info.data.readBigUInt64BE(2)), flags: info.data.readUInt16BE(10) };
  }

  // ---- transmission ------------------------------------------------------

  /** Raw 28-byte request header (plus payload) with every field chosen by the caller. */
  static requestHeader(type: number, flags: number, cookie: bigint, offset: bigint | number, length: number, magic = REQUEST_MAGIC): Buffer {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(magic >>> 0, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length >>> 0, 24);
    return h;
  }

  /**
   * Sends one request and resolves with its reply; any number may be in
   * flight. `payload` is sent after the header for writes (it may differ in
   * size from `length` to test framing).
   */
  command(type: number, flags: number, offset: number | bigint, length: number, payload?: Buffer): Promise<CommandResult> {
    const cookie = this.nextCookie++;
    const header = RawNbd.requestHeader(type, flags, cookie, offset, length);
    const p = new Promise<CommandResult>((resolve, reject) => {
      if (this.closedErr) return reject(this.closedErr);
      this.pending.set(cookie, { type, offset: Number(offset), length, resolve, reject, result: { error: 0, data: Buffer.alloc(0), extents: [] } });
    });
    if (payload) this.socket.write(Buffer.concat([header, payload]));
    else this.socket.write(header);
    this.startReader();
    return p;
  }

  readAt(offset: number, length: number, flags = 0): Promise<CommandResult> {
    return this.command(CMD.READ, flags, offset, length);
  }

  writeAt(offset: number, data: Buffer, flags = 0): Promise<CommandResult> {
    return this.command(CMD.WRITE, flags, offset, data.length, data);
  }

  flush(): Promise<CommandResult> {
    return this.command(CMD.FLUSH, 0, 0, 0);
  }

  /** NBD_CMD_DISC, then waits for the server to close. */
  async disconnect(): Promise<void> {
    this.socket.write(RawNbd.requestHeader(CMD.DISC, 0, this.nextCookie++, 0, 0));
    await this.closed;
  }

  private startReader(): void {
    if (this.readerRunning) return;
    this.readerRunning = true;
    this.readReplies().then(
      () => undefined,
      (err: Error) => {
        this.readerRunning = false;
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      },
    );
  }

  private async readReplies(): Promise<void> {
    for (;;) {
      // Cleared synchronously with the check, so a command issued right
      // after the last reply resolved starts a fresh reader.
      if (this.pending.size === 0) {
        this.readerRunning = false;
        return;
      }
      const magicBuf = await this.read(4);
      const magic = magicBuf.readUInt32BE(0);
      if (magic === SIMPLE_REPLY_MAGIC) {
        const h = await this.read(12);
        const error = h.readUInt32BE(0);
        const cookie = h.readBigUInt64BE(4);
        const p = this.pending.get(cookie);
        if (!p) throw new Error(`reply for unknown cookie ${cookie}`);
        this.pending.delete(cookie);
        if (error === 0 && p.type === CMD.READ) p.result.data = Buffer.from(await this.read(p.length));
        p.result.error = error;
        p.resolve(p.result);
      } else if (magic === STRUCTURED_REPLY_MAGIC) {
        const h = await this.read(16);
        const flags = h.readUInt16BE(0);
        const type = h.readUInt16BE(2);
        const cookie = h.readBigUInt64BE(4);
        const len = h.readUInt32BE(12);
        const payload = len > 0 ? await this.read(len) : Buffer.alloc(0);
        const p = this.pending.get(cookie);
        if (!p) throw new Error(`structured reply for unknown cookie ${cookie}`);
        const r = p.result;
        if (p.type === CMD.READ && r.data.length === 0) r.data = Buffer.alloc(p.length);
        if (type === REPLY_TYPE_OFFSET_DATA) {
          const off = Number(payload.readBigUInt64BE(0)) - p.offset;
          if (off < 0 || off + len - 8 > p.length) throw new Error('OFFSET_DATA chunk outside the request');
          payload.copy(r.data, off, 8);
        } else if (type === REPLY_TYPE_OFFSET_HOLE) {
          const off = Number(payload.readBigUInt64BE(0)) - p.offset;
          r.data.fill(0, off, off + payload.readUInt32BE(8));
        } else if (type === REPLY_TYPE_BLOCK_STATUS) {
          for (let pos = 4; pos + 8 <= payload.length; pos += 8) r.extents.push([payload.readUInt32BE(pos), payload.readUInt32BE(pos + 4)]);
        } else if (type & 0x8000) {
          r.error = payload.readUInt32BE(0);
        } else if (type !== 0) {
          throw new Error(`unexpected structured reply type ${type}`);
        }
        if (flags & REPLY_FLAG_DONE) {
          this.pending.delete(cookie);
          if (r.error !== 0) r.data = Buffer.alloc(0);
          p.resolve(r);
        }
      } else {
        throw new Error(`bad reply magic 0x${magic.toString(16)}`);
      }
    }
  }
}

/** NBD_OPT_GO / NBD_OPT_INFO payload: name, then requested info types. */
export function goData(exportName: string, infos: number[] = []): Buffer {
  const name = Buffer.from(exportName, 'utf8');
  const b = Buffer.alloc(4 + name.length + 2 + 2 * infos.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + name.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + name.length + 2 * i));
  return b;
}

/** NBD_OPT_{LIST,SET}_META_CONTEXT payload. */
export function metaContextData(exportName: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const name = Buffer.from(exportName, 'utf8');
  const h = Buffer.alloc(4);
  h.writeUInt32BE(name.length, 0);
  parts.push(h, name);
  const n = Buffer.alloc(4);
  n.writeUInt32BE(queries.length, 0);
  parts.push(n);
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    const l = Buffer.alloc(4);
    l.writeUInt32BE(qb.length, 0);
    parts.push(l, qb);
  }
  return Buffer.concat(parts);
}
