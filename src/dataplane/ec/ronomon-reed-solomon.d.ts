// Types for the untyped native addon @ronomon/reed-solomon (binding.c, v6).
declare module "@ronomon/reed-solomon" {
  /** Opaque encoding context (a Buffer holding w, k, m and the bitmatrix); reusable concurrently. */
  export function create(k: number, m: number): Buffer;
  /**
   * Encode `targets` from `sources` (bit i = shard i; shards 0..k-1 live in
   * `buffer`, k..k+m-1 in `parity`). Runs on the libuv threadpool; argument
   * errors throw synchronously, `end` is always called with no error.
   */
  export function encode(
    context: Buffer,
    sources: number,
    targets: number,
    buffer: Buffer,
    bufferOffset: number,
    bufferSize: number,
    parity: Buffer,
    parityOffset: number,
    paritySize: number,
    end: (error?: Error) => void,
  ): void;
  export const MAX_K: number;
  export const MAX_M: number;
}
