// What the couchestor command makes of the daemon API's answers: an error
// answer always prints a message, UTF-8 bodies arrive whole, and a daemon
// listening on an IPv6 address (daemon.json's api.host '::1') is reachable.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from './helpers/daemon.js';

let d: TestDaemon;
before(async () => {
  // --listen ::1: every test here also goes through an IPv6 API address.
  d = await TestDaemon.start({ args: ['--listen', '::1'] });
});
after(() => d.cleanup());

test('the API on an IPv6 address (api.host ::1) serves the command', () => {
  assert.equal(d.info.api.host, '::1');
  const r = d.cli('volumes', 'list', '--json');
  // Before (fetch on `http://${host}:${port}`): "Failed to parse URL from http://::1:PORT/v1/volumes".
  assert.equal(r.status, 0, r.stderr);
  assert.ok(Array.isArray(JSON.parse(r.stdout)), r.stdout);
});

test('an error answer without a "message" field still prints what went wrong', () => {
  // POST /v1/rebuild answers an empty pool name with 400 {"error": "body must be ..."} and no message.
  const r = d.cli('rebuild', '');
  assert.equal(r.status, 1, r.stderr);
  // Before: "couchestor: " and nothing else.
  assert.match(r.stderr, /^couchestor: body must be \{"pool": "<cold pool name>"\}$/m);
});

test('labels with multi-byte characters reach the daemon intact (body length in bytes)', () => {
  const value = 'é€😀-ünïcödé';
  const r = d.cli('volumes', 'create', 'labelled', '16M', '--label', `owner=${value}`, '--json');
  assert.equal(r.status, 0, r.stderr);
  const list = JSON.parse(d.cli('volumes', 'list', '--json').stdout) as { name: string; labels?: Record<string, string> }[];
  assert.equal(list.find((v) => v.name === 'labelled')?.labels?.owner, value);
});
