// The S3 idle timeouts in couchestor.yaml (config.ts s3.bodyIdleTimeoutMs,
// s3.sendIdleTimeoutMs): defaults written at first start, bad values refused
// by validateConfig and by `couchestor serve`, and the retired environment
// variable named in a warning instead of being silently ignored.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { embeddedDefault, loadConfig, validateConfig } from '../src/config.js';
import { InvalidArgument } from '../src/dataplane/errors.js';
import { CLI } from './helpers/daemon.js';
import { startS3 } from './helpers/s3-env.js';

const tempDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 's3-config-idle-'));

describe('S3 idle timeouts in couchestor.yaml', () => {
  it('a first start writes the defaults (20 s body, 60 s send) into couchestor.yaml; a partial s3 section keeps them', () => {
    const dir = tempDir();
    try {
      const cfg = loadConfig(dir);
      assert.deepEqual([cfg.s3.bodyIdleTimeoutMs, cfg.s3.sendIdleTimeoutMs], [20_000, 60_000]);
      const onDisk = YAML.parse(fs.readFileSync(path.join(dir, 'couchestor.yaml'), 'utf8'));
      assert.deepEqual([onDisk.s3.bodyIdleTimeoutMs, onDisk.s3.sendIdleTimeoutMs], [20_000, 60_000]);
      fs.writeFileSync(path.join(dir, 'couchestor.yaml'), 's3: {sendIdleTimeoutMs: 1500}\n');
      const partial = loadConfig(dir);
      assert.deepEqual([partial.s3.bodyIdleTimeoutMs, partial.s3.sendIdleTimeoutMs, partial.s3.port], [20_000, 1500, 9000]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('validateConfig refuses a timeout that is not a whole number of milliseconds from 1 to 1 h, naming the setting', () => {
    for (const key of ['bodyIdleTimeoutMs', 'sendIdleTimeoutMs'] as const) {
      for (const bad of [0, -1, 1.5, 3_600_001, '20000', null]) {
        const cfg = embeddedDefault('/tmp/unused');
        (cfg.s3 as Record<string, unknown>)[key] = bad;
        assert.throws(() => validateConfig(cfg), (e: Error) => e instanceof InvalidArgument && e.message.includes(`s3.${key}`), `${key}: ${JSON.stringify(bad)}`);
      }
      const ok = embeddedDefault('/tmp/unused');
      ok.s3[key] = 3_600_000;
      validateConfig(ok);
    }
  });

  it('couchestor serve refuses to start with s3.sendIdleTimeoutMs: 0, saying which setting', () => {
    const dir = tempDir();
    try {
      fs.writeFileSync(path.join(dir, 'couchestor.yaml'), 's3: {sendIdleTimeoutMs: 0}\n');
      const r = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', dir, '--nbd-port', '0', '--api-port', '0', '--metrics-port', '0', '--s3-port', '0'], { encoding: 'utf8', timeout: 60_000 });
      assert.notEqual(r.status, 0, r.stdout);
      assert.match(r.stderr, /s3\.sendIdleTimeoutMs must be a whole number of milliseconds/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('COUCHESTOR_S3_BODY_IDLE_TIMEOUT_MS set in the environment is named in a warning (it is no longer read)', async () => {
    process.env.COUCHESTOR_S3_BODY_IDLE_TIMEOUT_MS = '2000';
    let env;
    try {
      env = await startS3();
    } finally {
      delete process.env.COUCHESTOR_S3_BODY_IDLE_TIMEOUT_MS;
    }
    try {
      const warning = /WARN s3: COUCHESTOR_S3_BODY_IDLE_TIMEOUT_MS is no longer read: set s3\.bodyIdleTimeoutMs in couchestor\.yaml bodyIdleTimeoutMs=20000/;
      // Written before the ready line, but on stderr: it may arrive after stdout's ready line.
      const daemon = env.daemon;
      await new Promise<void>((resolve, reject) => {
        const bound = setTimeout(() => reject(new Error(`no warning in:\n${daemon.stderr}`)), 10_000);
        const check = () => {
          if (!warning.test(daemon.stderr)) return;
          clearTimeout(bound);
          daemon.proc.stderr!.off('data', check);
          resolve();
        };
        daemon.proc.stderr!.on('data', check);
        check();
      });
    } finally {
      await env.cleanup();
    }
  });
});
