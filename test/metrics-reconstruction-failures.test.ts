// The reconstructor's failure counts (Reconstructor.poolRetryFailures and
// timerFailures: a listed pool's rebuild retry that threw, a scheduled
// scrub/retry pass that failed) are exported as Prometheus counters, typed
// and described, and the real `promtool check metrics` accepts the scrape.
// Before, they were kept in memory only (no series).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { TestDaemon } from './helpers/daemon.js';
import { metric, scrape } from './helpers/control-loop.js';

const COUNTERS = ['couchestor_rebuild_retry_failures_total', 'couchestor_reconstruction_timer_failures_total'];

test('a healthy daemon with a cold tier exports the rebuild-retry and reconstruction-timer failure counters at 0', async (t) => {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  d.createVolume('c1', '4M', '--tier', 'cold');
  // A scrub pass ran (and the retry timer's state is read as is): nothing failed.
  const scrub = await fetch(`http://127.0.0.1:${d.info.api.port}/v1/scrub`, { method: 'POST' });
  assert.equal(scrub.status, 200);
  const text = await scrape(d);
  const promtool = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(promtool.status, 0, `promtool check metrics:\n${promtool.stdout}${promtool.stderr}`);
  for (const name of COUNTERS) {
    assert.match(text, new RegExp(`^# TYPE ${name} counter$`, 'm'), `${name} typed counter`);
    assert.match(text, new RegExp(`^# HELP ${name} \\S.{20,}$`, 'm'), `${name} described`);
    assert.equal(metric(text, name), 0, `${name} is 0 on a healthy daemon`);
  }
});
