// The files a first start writes and every later start trusts (the S3 key
// pair, the embedded couchestor.yaml, the default StoragePolicy and EC
// policy) are published whole and durable: bytes fsynced under a temporary
// name, link()ed to the real name (exclusive, like O_EXCL), then the
// directory fsynced, before the key is printed or the daemon goes on. Before,
// a power cut after the first start could leave an empty couchestor.yaml or
// lose s3-credentials.json, and the next start generated a new key under the
// clients configured with the printed one. Checked in process on an event log
// of fs.fsyncSync (file or directory) and fs.linkSync.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { loadCredentials, CREDENTIALS_FILE } from '../src/dataplane/s3/credentials.js';
import { writeFileDurableSync } from '../src/dataplane/dir-sync.js';

type Event = { kind: 'filesync' | 'dirsync' | 'link'; path: string };

function recordEvents(): { events: Event[]; restore(): void } {
  const events: Event[] = [];
  const real = { fsyncSync: fs.fsyncSync, linkSync: fs.linkSync };
  fs.fsyncSync = ((fd: number) => {
    real.fsyncSync(fd);
    const p = fs.readlinkSync(`/proc/self/fd/${fd}`);
    events.push({ kind: fs.fstatSync(fd).isDirectory() ? 'dirsync' : 'filesync', path: p });
  }) as typeof fs.fsyncSync;
  fs.linkSync = ((from: fs.PathLike, to: fs.PathLike) => {
    real.linkSync(from, to);
    events.push({ kind: 'link', path: path.resolve(String(to)) });
  }) as typeof fs.linkSync;
  syncBuiltinESMExports();
  return {
    events,
    restore() {
      Object.assign(fs, real);
      syncBuiltinESMExports();
    },
  };
}

/** `file` was linked in after its bytes were synced under a temporary name, and its directory synced after the link. */
function assertPublishedDurably(events: Event[], file: string): void {
  const link = events.findIndex((e) => e.kind === 'link' && e.path === file);
  assert.ok(link >= 0, `${file} was not published by link()`);
  const dataSync = events.findIndex((e) => e.kind === 'filesync' && e.path.startsWith(`${file}.tmp-`));
  assert.ok(dataSync >= 0 && dataSync < link, `${file}'s bytes were not synced before its name was published`);
  const dirSync = events.findIndex((e, i) => i > link && e.kind === 'dirsync' && e.path === path.dirname(file));
  assert.ok(dirSync > link, `${path.dirname(file)} was not fsynced after ${path.basename(file)} was linked in`);
}

test('first start: configuration, policies and the S3 key are durable, whole, and printed only once on disk', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cs-first-start-'));
  const rec = recordEvents();
  let cfg;
  let keys;
  try {
    cfg = loadConfig(dir);
    keys = loadCredentials(cfg.dataDir);
  } finally {
    rec.restore();
  }
  try {
    const files = [
      path.join(cfg.dataDir, 'couchestor.yaml'),
      path.join(cfg.dataDir, cfg.control.policiesDir, 'default-storage-policy.yaml'),
      path.resolve(cfg.dataDir, cfg.coldTier.ecPolicyFile),
      path.join(cfg.dataDir, CREDENTIALS_FILE),
    ];
    for (const f of files) {
      assertPublishedDurably(rec.events, f);
      assert.ok(fs.statSync(f).size > 0, `${f} is empty`);
    }
    assert.equal(fs.statSync(files[3]!).mode & 0o777, 0o600, 'the key file is readable by its owner only');
    // No temporary name is left behind, and a second start reads what the first wrote.
    const leftovers = fs.readdirSync(cfg.dataDir).filter((n) => n.includes('.tmp-'));
    assert.deepEqual(leftovers, []);
    assert.deepEqual(loadCredentials(cfg.dataDir), keys);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writeFileDurableSync is exclusive: a second writer finds the first one\'s file and leaves it whole', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cs-first-start-'));
  try {
    const file = path.join(dir, 'key.json');
    assert.equal(writeFileDurableSync(file, 'first\n', 0o600), true);
    assert.equal(writeFileDurableSync(file, 'second\n', 0o600), false);
    assert.equal(fs.readFileSync(file, 'utf8'), 'first\n');
    assert.deepEqual(fs.readdirSync(dir), ['key.json']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a temporary file a power cut left behind does not stand in for the key file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cs-first-start-'));
  try {
    // What a cut between the temporary file's create and its link leaves.
    fs.writeFileSync(path.join(dir, `${CREDENTIALS_FILE}.tmp-999999`), '');
    const keys = loadCredentials(dir);
    assert.equal(keys.length, 1);
    assert.match(keys[0]!.accessKeyId, /^CS[A-Z2-7]{16}$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
