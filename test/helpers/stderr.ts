// Captures what the daemon's logger writes (its sink is stderr) while a call runs,
// for tests that count or match log lines.

/** Lines written to stderr while `fn` runs (still passed through), beside its result. */
export async function stderrLines<T>(fn: () => Promise<T>): Promise<{ value: T; lines: string[] }> {
  const lines: string[] = [];
  const real = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
    return (real as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  try {
    return { value: await fn(), lines };
  } finally {
    process.stderr.write = real;
  }
}
