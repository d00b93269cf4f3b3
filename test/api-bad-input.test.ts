// The admin API answers bad input with a 4xx naming the problem, and the
// daemon carries on. Before, POST /v1/reconcile?wait=true (or wait=yes)
// answered 200 at once without waiting for the migrations, as if wait=0: a
// script then read the volumes before they moved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from './helpers/daemon.js';

async function call(d: TestDaemon, method: string, urlPath: string, body?: string, type = 'application/json'): Promise<{ status: number; json: { error?: string; message?: string } }> {
  const res = await fetch(`http://127.0.0.1:${d.info.api.port}${urlPath}`, { method, headers: body === undefined ? {} : { 'content-type': type }, body });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as { error?: string; message?: string }) : {} };
}

test('bad admin requests: 4xx naming the problem; the daemon keeps answering', async (t) => {
  const d = await TestDaemon.start({ config: 'demoVolume: null\n' });
  t.after(() => d.cleanup());
  const cases: [string, string, string | undefined, number, RegExp][] = [
    ['POST', '/v1/reconcile?wait=true', undefined, 400, /querystring\/wait must be equal to one of the allowed values/],
    ['POST', '/v1/volumes', '{bad', 400, /Body is not valid JSON/],
    ['POST', '/v1/volumes', '{"name":"a","sizeBytes":1048577}', 400, /multiple of 512 bytes/],
    ['POST', '/v1/volumes', '{"name":"a/b","sizeBytes":1048576}', 400, /invalid volume name/],
    ['POST', '/v1/volumes', '{"name":"a","sizeBytes":1048576,"tier":"glacier"}', 400, /body\/tier must be equal to one of the allowed values/],
    ['POST', '/v1/volumes/nope/migrate', '{"tier":"cold"}', 404, /no volume named nope/],
    ['POST', '/v1/volumes', JSON.stringify({ name: 'x'.repeat(70_000), sizeBytes: 1 }), 413, /too large/],
    ['POST', '/v1/rebuild', '[1]', 400, /body must be \{"pool"/],
    ['POST', '/v1/rebuild', '{"pool":"hot-0"}', 404, /no cold pool named hot-0/],
  ];
  for (const [method, p, body, status, message] of cases) {
    const r = await call(d, method, p, body);
    assert.equal(r.status, status, `${method} ${p} ${body?.slice(0, 60)}: ${JSON.stringify(r.json)}`);
    assert.match(`${r.json.error} ${r.json.message}`, message, `${method} ${p}`);
  }
  // Still serving: the valid forms work.
  assert.equal((await call(d, 'POST', '/v1/reconcile?wait=1')).status, 200);
  assert.equal((await call(d, 'POST', '/v1/volumes', '{"name":"a","sizeBytes":1048576}')).status, 201);
  assert.equal((await call(d, 'GET', '/healthz')).status, 200);
});
