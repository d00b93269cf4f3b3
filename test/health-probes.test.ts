// /healthz and /readyz over real HTTP: 503 with the failing reasons until the
// daemon is ready, 200 after; a throwing or hanging check is a 503, not a crash.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import {
  startHealthServer,
  registerHealthRoutes,
  HEALTH_CHECK_TIMEOUT_MS,
  type HealthCheck,
} from '../src/control/health/index.js';

const HOST = '127.0.0.1';

/** Daemon state the checks read, flipped by the test as a daemon would at start-up. */
class DaemonState {
  metadataOpen = false;
  readonly requiredPools = ['hot-0', 'cold-0'];
  readonly onlinePools = new Set<string>();
  stopping = false;

  live(): HealthCheck {
    return this.stopping ? { ok: false, reasons: ['shutting down'] } : { ok: true, reasons: [] };
  }

  ready(): HealthCheck {
    const reasons: string[] = [];
    if (!this.metadataOpen) reasons.push('metadata not open');
    for (const pool of this.requiredPools) if (!this.onlinePools.has(pool)) reasons.push(`pool ${pool} missing`);
    return { ok: reasons.length === 0, reasons };
  }
}

async function get(port: number, path: string, method = 'GET'): Promise<{ status: number; body: unknown; contentType: string | null }> {
  const res = await fetch(`http://${HOST}:${port}${path}`, { method });
  const text = await res.text();
  return { status: res.status, body: text.length > 0 ? JSON.parse(text) : null, contentType: res.headers.get('content-type') };
}

test('/readyz answers 503 with every failing reason until the daemon is ready, then 200', async () => {
  const state = new DaemonState();
  const server = await startHealthServer({ host: HOST, port: 0, checks: { live: () => state.live(), ready: () => state.ready() } });
  try {
    assert.ok(server.port > 0 && server.port !== 8081);

    let res = await get(server.port, '/readyz');
    assert.equal(res.status, 503);
    assert.match(res.contentType ?? '', /^application\/json/);
    assert.deepEqual(res.body, { check: 'ready', status: 'failing', reasons: ['metadata not open', 'pool hot-0 missing', 'pool cold-0 missing'] });

    state.metadataOpen = true;
    state.onlinePools.add('hot-0');
    res = await get(server.port, '/readyz');
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { check: 'ready', status: 'failing', reasons: ['pool cold-0 missing'] });

    state.onlinePools.add('cold-0');
    res = await get(server.port, '/readyz');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { check: 'ready', status: 'ok', reasons: [] });

    // Losing a pool makes the node unready again.
    state.onlinePools.delete('hot-0');
    res = await get(server.port, '/readyz');
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { check: 'ready', status: 'failing', reasons: ['pool hot-0 missing'] });
  } finally {
    await server.close();
  }
});

test('/healthz is 200 while live and 503 with the reason when not, independent of readiness', async () => {
  const state = new DaemonState();
  const server = await startHealthServer({ host: HOST, port: 0, checks: { live: () => state.live(), ready: () => state.ready() } });
  try {
    let res = await get(server.port, '/healthz');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { check: 'live', status: 'ok', reasons: [] });

    state.stopping = true;
    res = await get(server.port, '/healthz');
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { check: 'live', status: 'failing', reasons: ['shutting down'] });
  } finally {
    await server.close();
  }
});

test('a check that throws, returns garbage, or fails with no reason still answers 503 with a reason', async () => {
  let mode: 'throw' | 'garbage' | 'silent' = 'throw';
  const ready = (): HealthCheck => {
    if (mode === 'throw') throw new Error('lmdb env closed');
    if (mode === 'garbage') return { ok: 'yes' } as unknown as HealthCheck;
    return { ok: false, reasons: [] };
  };
  const server = await startHealthServer({ host: HOST, port: 0, checks: { live: () => ({ ok: true, reasons: [] }), ready } });
  try {
    let res = await get(server.port, '/readyz');
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { check: 'ready', status: 'failing', reasons: ['check threw: lmdb env closed'] });
    mode = 'garbage';
    res = await get(server.port, '/readyz');
    assert.deepEqual([res.status, res.body], [503, { check: 'ready', status: 'failing', reasons: ['check returned an invalid result'] }]);
    mode = 'silent';
    res = await get(server.port, '/readyz');
    assert.deepEqual([res.status, res.body], [503, { check: 'ready', status: 'failing', reasons: ['not ready'] }]);
  } finally {
    await server.close();
  }
});

test('an async check that never settles answers 503 after the check timeout', async () => {
  const server = await startHealthServer({
    host: HOST,
    port: 0,
    checks: { live: () => new Promise<HealthCheck>(() => {}), ready: async () => ({ ok: true, reasons: [] }) },
  });
  try {
    const startedMs = performance.now();
    const res = await get(server.port, '/healthz');
    const elapsedMs = performance.now() - startedMs;
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { check: 'live', status: 'failing', reasons: [`check did not answer within ${HEALTH_CHECK_TIMEOUT_MS} ms`] });
    assert.ok(elapsedMs >= HEALTH_CHECK_TIMEOUT_MS - 50 && elapsedMs < HEALTH_CHECK_TIMEOUT_MS * 3, `answered after ${elapsedMs} ms`);
    // The async ready check resolves normally on the same server.
    assert.equal((await get(server.port, '/readyz')).status, 200);
  } finally {
    await server.close();
  }
});

test('unknown routes and methods are 404; after close() the port refuses connections', async () => {
  const server = await startHealthServer({ host: HOST, port: 0, checks: { live: () => ({ ok: true, reasons: [] }), ready: () => ({ ok: true, reasons: [] }) } });
  const port = server.port;
  try {
    assert.equal((await get(port, '/health')).status, 404);
    assert.equal((await get(port, '/metrics')).status, 404);
    assert.equal((await get(port, '/healthz/extra')).status, 404);
    assert.equal((await get(port, '/readyz', 'POST')).status, 404);
    // HEAD is answered like GET, without a body (kubelet and load balancers use it).
    const head = await fetch(`http://${HOST}:${port}/readyz`, { method: 'HEAD' });
    assert.equal(head.status, 200);
  } finally {
    await server.close();
  }
  await assert.rejects(fetch(`http://${HOST}:${port}/healthz`), /fetch failed/);
});

test('registerHealthRoutes mounts the same probes on an existing fastify app', async () => {
  const app = Fastify({ logger: false });
  app.get('/v1/pools', async () => []);
  registerHealthRoutes(app, { live: () => ({ ok: true, reasons: [] }), ready: () => ({ ok: false, reasons: ['metadata not open'] }) });
  const res = await app.inject({ method: 'GET', url: '/readyz' });
  assert.equal(res.statusCode, 503);
  assert.deepEqual(res.json(), { check: 'ready', status: 'failing', reasons: ['metadata not open'] });
  assert.equal((await app.inject({ method: 'GET', url: '/v1/pools' })).statusCode, 200);
  await app.close();
});
