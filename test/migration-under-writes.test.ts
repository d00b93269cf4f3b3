// Regression test of issue #4's data-integrity bug: back-to-back hot <-> cold
// cycles under an 8-deep fio randwrite verify job, with a 20 ms destager.
// Three causes were found with it: a file write in flight at the switch to
// cold, a destage straddling a switch to hot, and (the last) a destager pass
// listing journaled chunks before a cold -> hot migration promoted them,
// then copying each promoted chunk's file onto itself over writes in flight
// (test/destage-after-promote-keeps-writes forces that race directly).
// Migrations while a client writes flat out: chunks written during the copy
// are copied again, the background destager works on the same chunks at the
// same time, and every migration still completes with the bytes intact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createVolume, fioFill, FioJob, startControlDaemon, volume } from './helpers/control-loop.js';

const MiB = 1024 * 1024;
const SIZE_BYTES = 32 * MiB;
const CYCLES = 4;

test('hot <-> cold migrations under a random-write verify load, destager racing them: all succeed, 0 verify errors', async (t) => {
  // A destager pass every 20 ms: it destages journaled chunks of the volume
  // while the migration copies the same chunks.
  const d = await startControlDaemon({ policies: {}, config: { destageIntervalMs: 20 } });
  let job: FioJob | null = null;
  t.after(async () => {
    job?.kill();
    await d.cleanup();
  });
  await createVolume(d, 'busy', SIZE_BYTES);
  fioFill(d.exportUri('busy'), SIZE_BYTES);
  job = new FioJob('writer', d.exportUri('busy'), [
    '--rw=randwrite', '--bs=4k', '--iodepth=8', `--size=${SIZE_BYTES}`,
    '--verify=crc32c', '--verify_backlog=64', '--verify_fatal=1', '--verify_state_save=0',
    '--time_based', '--runtime=600',
  ]);
  const results: string[] = [];
  // Timeline for the failure message: which migration the writer died in.
  const t0 = Date.now();
  const timeline: string[] = [];
  void job.done().then(() => timeline.push(`writer exited @${Date.now() - t0}ms`), () => undefined);
  for (let i = 0; i < CYCLES; i++) {
    for (const tier of ['cold', 'hot'] as const) {
      const startMs = Date.now() - t0;
      const res = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/volumes/busy/migrate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tier }) });
      const body = (await res.json()) as { phase?: string; message?: string };
      results.push(`${tier}:${res.status}:${body.phase ?? body.message}`);
      timeline.push(`${tier} ${startMs}-${Date.now() - t0}ms`);
    }
  }
  const wasRunning = job.running;
  const r = await job.stop();
  assert.equal(r.job.error, 0, `${r.stderr}\nmigrations: ${results.join(' ')}\ntimeline: ${timeline.join(', ')}`);
  assert.ok(wasRunning, 'writer ran through every migration');
  assert.deepEqual(results, Array.from({ length: CYCLES }, () => ['cold:200:Done', 'hot:200:Done']).flat());
  assert.equal((await volume(d, 'busy')).tier, 'hot');
  assert.ok(r.job.write.total_ios > 0 && r.job.read.total_ios > 0);
  t.diagnostic(`writer: ${r.job.write.total_ios} writes, ${r.job.read.total_ios} verified`);
});
