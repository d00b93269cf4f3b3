// A second daemon whose port is taken exits at once with an error naming the
// listener and the flag to change it; the daemon holding the port carries on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI, TestDaemon } from './helpers/daemon.js';

/** Far above a clean start-up; the old behaviour hung until killed. */
const EXIT_TIMEOUT_MS = 30_000;

function serveExpectingFailure(args: string[]): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`daemon with a taken port did not exit within ${EXIT_TIMEOUT_MS} ms:\n${stderr}`));
    }, EXIT_TIMEOUT_MS);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, stdout });
    });
  });
}

for (const which of ['metrics', 's3', 'nbd'] as const) {
  test(`a taken ${which} port: the second daemon exits 1 naming it, the first keeps serving`, async (t) => {
    const first = await TestDaemon.start();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchestor-port-'));
    t.after(async () => {
      await first.cleanup();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const ports = { 'nbd-port': '0', 'api-port': '0', 'metrics-port': '0', 's3-port': '0' };
    const taken = which === 'metrics' ? first.info.metrics.port : which === 's3' ? first.info.s3.port : first.info.nbd.port;
    ports[`${which}-port`] = String(taken);
    const args = ['--data-dir', dir, ...Object.entries(ports).flatMap(([k, v]) => [`--${k}`, v])];

    const second = await serveExpectingFailure(args);
    assert.equal(second.code, 1, second.stderr);
    assert.doesNotMatch(second.stdout, /couchestor ready/);
    assert.match(second.stderr, new RegExp(`cannot listen for .* on port ${taken}: the port is in use .*--${which}-port`, 'i'));
    // It let go of what it had opened: its data directory can be served now.
    const again = await TestDaemon.start({ dataDir: dir });
    assert.equal(await again.stop(), 0);

    const health = await fetch(`http://127.0.0.1:${first.info.api.port}/healthz`);
    assert.equal(health.status, 200);
  });
}
