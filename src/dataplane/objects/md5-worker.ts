// Worker thread for md5-offload.ts: keeps one MD5 per upload stream and
// hashes the batches the event loop hands over, returning each batch's
// buffer (transferred, not copied) for reuse.
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

export type ToWorker = { op: 'data'; id: number; buf: ArrayBuffer; lengthBytes: number } | { op: 'end'; id: number } | { op: 'drop'; id: number };
export type FromWorker = { op: 'ack'; id: number; buf: ArrayBuffer } | { op: 'digest'; id: number; digest: ArrayBuffer };

const port = parentPort;
if (port) {
  /** Bounded by the uploads in flight: the event loop sends 'end' or 'drop' for every stream it starts. */
  const hashes = new Map<number, Hash>();
  port.on('message', (m: ToWorker) => {
    switch (m.op) {
      case 'data': {
        let h = hashes.get(m.id);
        if (!h) {
          h = createHash('md5');
          hashes.set(m.id, h);
        }
        h.update(new Uint8Array(m.buf, 0, m.lengthBytes));
        port.postMessage({ op: 'ack', id: m.id, buf: m.buf } satisfies FromWorker, [m.buf]);
        break;
      }
      case 'end': {
        const d = (hashes.get(m.id) ?? createHash('md5')).digest();
        hashes.delete(m.id);
        const digest = new ArrayBuffer(d.length);
        new Uint8Array(digest).set(d);
        port.postMessage({ op: 'digest', id: m.id, digest } satisfies FromWorker, [digest]);
        break;
      }
      case 'drop':
        hashes.delete(m.id);
        break;
    }
  });
}
