// A node:test reporter that prints, once the run ends, the slowest test files
// and every failed test with its error. `npm test` runs it beside the TAP
// reporter so that the last lines of a long run (all a CI page may show of
// 1,500 s of TAP) say which test failed and why, not only "# fail 1".
import type { TestEvent } from 'node:test/reporters';

/** How many of the slowest test files to list. */
const SLOWEST_FILES = 8;
/** An error message is cut to this many characters (a stack is not printed: the TAP above has it). */
const ERROR_CHARS_MAX = 700;

interface Failure {
  name: string;
  file: string | undefined;
  line: number | undefined;
  durationMs: number;
  error: string;
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // node:test wraps a test's own error in ERR_TEST_FAILURE with it as the cause.
  const cause = (error as Error & { cause?: unknown }).cause;
  const inner = cause instanceof Error ? cause : error;
  const text = `${inner.name}: ${inner.message}`.replace(/\s+/g, ' ');
  return text.length > ERROR_CHARS_MAX ? `${text.slice(0, ERROR_CHARS_MAX)}...` : text;
}

export default async function* summaryReporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const failures: Failure[] = [];
  const fileDurationsMs = new Map<string, number>();
  for await (const event of source) {
    // A file's time: the sum of its top-level tests' (Node 20 reports no event for a file that passes).
    if ((event.type === 'test:pass' || event.type === 'test:fail') && event.data.nesting === 0 && event.data.file !== undefined) {
      const file = event.data.file;
      fileDurationsMs.set(file, (fileDurationsMs.get(file) ?? 0) + event.data.details.duration_ms);
    }
    if (event.type === 'test:fail') {
      const d = event.data;
      const error = d.details.error as Error & { failureType?: string; exitCode?: number | null; signal?: string | null };
      // A test whose subtests failed fails too ("N subtests failed"): only the subtests are news.
      if (error.failureType === 'subtestsFailed') continue;
      // A test file that died outright (a crash, a signal) has no test error, only how its process ended.
      const how = error.exitCode != null || error.signal != null ? ` (process exit code ${error.exitCode ?? '-'}, signal ${error.signal ?? '-'})` : '';
      failures.push({ name: d.name, file: d.file, line: d.line, durationMs: d.details.duration_ms, error: describeError(error) + how });
    }
  }
  const base = (file: string | undefined): string => (file === undefined ? '?' : file.slice(file.lastIndexOf('/') + 1));
  const lines: string[] = ['', '# ---- summary (test/helpers/summary-reporter.ts) ----'];
  const fileDurations = [...fileDurationsMs].map(([file, durationMs]) => ({ file, durationMs })).sort((a, b) => b.durationMs - a.durationMs);
  lines.push(`# slowest files: ${fileDurations.slice(0, SLOWEST_FILES).map((f) => `${base(f.file)} ${(f.durationMs / 1000).toFixed(0)} s`).join(', ')}`);
  if (failures.length === 0) {
    lines.push('# failed: none');
  } else {
    lines.push(`# failed: ${failures.length}`);
    for (const f of failures) {
      lines.push(`# FAILED ${base(f.file)}:${f.line ?? '?'} (${(f.durationMs / 1000).toFixed(1)} s) ${f.name}`);
      lines.push(`#   ${f.error}`);
    }
  }
  yield `${lines.join('\n')}\n`;
}
