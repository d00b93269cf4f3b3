// couchestor.yaml is checked setting by setting: a value of the wrong type or
// out of range, or a misspelt name, stops `couchestor serve` with one line
// naming the file, the setting and the value given, before anything listens
// or is written to the index. Before, only pools, ports and the s3 settings
// were checked: `reconcileIntervalMs: 0` (or "30s", read by the timer as 1 ms)
// ran control passes back to back, a negative heat sample interval sampled
// every millisecond, `cntrol:` was ignored for the defaults, and
// `pools: {...}` failed with "cfg.pools is not iterable".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from './helpers/daemon.js';
import { loadConfig } from '../src/config.js';
import { LOCK_FILE } from '../src/data-dir-lock.js';

const CASES: { yaml: string; message: RegExp }[] = [
  { yaml: 'control: {reconcileIntervalMs: 0}', message: /control\.reconcileIntervalMs must be a whole number of milliseconds from 100 to 2147483647, got 0$/ },
  { yaml: 'control: {reconcileIntervalMs: "30s"}', message: /control\.reconcileIntervalMs .*, got "30s"$/ },
  { yaml: 'control: {reconcileIntervalMs: 3000000000}', message: /control\.reconcileIntervalMs .*, got 3000000000$/ },
  { yaml: 'control: {heatSampleIntervalMs: -5}', message: /control\.heatSampleIntervalMs .*, got -5$/ },
  { yaml: 'control: {preservationMode: "yes please"}', message: /control\.preservationMode must be true or false, got "yes please"$/ },
  { yaml: 'control: {heatSource: {type: prometheus}}', message: /control\.heatSource\.url must be the Prometheus server's http\(s\) URL, got nothing$/ },
  { yaml: 'control: {heatSource: {type: prometheus, url: "http://p:9090", metrics: mayastor}}', message: /control\.heatSource\.metrics must be seed or couchestor, got "mayastor"$/ },
  { yaml: 'control: {heatSource: {type: remote}}', message: /control\.heatSource\.type must be local or prometheus, got "remote"$/ },
  { yaml: 'coldTier: {journalCapacityBytes: lots}', message: /coldTier\.journalCapacityBytes must be a whole number of bytes >= 4194304, got "lots"$/ },
  { yaml: 'coldTier: {destageThresholdPercent: 150}', message: /coldTier\.destageThresholdPercent must be a percentage in \(0, 100\], got 150$/ },
  { yaml: 'coldTier: {destageIntervalMs: 0}', message: /coldTier\.destageIntervalMs .*, got 0$/ },
  { yaml: 'coldTier: {compaction: {intervalMs: 1e12}}', message: /coldTier\.compaction\.intervalMs .*, got 1000000000000$/ },
  { yaml: 'cache: {l1CapacityBytes: -1}', message: /cache\.l1CapacityBytes must be a whole number of bytes >= 0 \(0: no cache\), got -1$/ },
  { yaml: 'demoVolume: {name: d, sizeBytes: 1G}', message: /demoVolume\.sizeBytes .*, got "1G"$/ },
  { yaml: 'cntrol: {reconcileIntervalMs: 1000}', message: /: cntrol is not a setting \(known: listenHost, nbd, .*control.*\)$/ },
  { yaml: 'control: {reconcileInterval: 30s}', message: /: control\.reconcileInterval is not a setting \(known: .*reconcileIntervalMs.*\)$/ },
  { yaml: 'pools: [{name: a, tier: hot, path: a, capacity: auto, lables: {disk: nvme}}]', message: /: pools\[0\]\.lables is not a setting \(known: name, tier, path, capacity, labels\)$/ },
  { yaml: 'pools: {name: a, tier: hot}', message: /: pools must be a list of pools, got \{"name":"a","tier":"hot"\}$/ },
  { yaml: 'pools: [{name: a, tier: hot, path: a, capacity: auto, labels: [nvme]}]', message: /pool a: labels must be a mapping of label -> string value, got \["nvme"\]$/ },
  { yaml: 'nbd: 10809', message: /: nbd must be a mapping, got 10809$/ },
  { yaml: '- a list', message: /: must be a YAML mapping of settings, got \["a list"\]$/ },
  { yaml: 'control: {reconcileIntervalMs: [1', message: /: not valid YAML: / },
];

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'config-validation-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('serve refuses each bad couchestor.yaml with one line naming the file, the setting and the value; nothing is created', (t) => {
  for (const c of CASES) {
    const dir = tempDir(t);
    const file = path.join(dir, 'couchestor.yaml');
    fs.writeFileSync(file, c.yaml + '\n');
    const r = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', dir, '--nbd-port', '0', '--api-port', '0', '--s3-port', '0', '--metrics-port', '0'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, `${c.yaml}: exit ${r.status}, stdout ${r.stdout}, stderr ${r.stderr}`);
    assert.doesNotMatch(r.stdout, /couchestor ready/, c.yaml);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `${c.yaml}: one line, no stack trace:\n${r.stderr}`);
    assert.ok(lines[0]!.startsWith(`couchestor: ${file}: `), `${c.yaml}: names the file: ${lines[0]}`);
    assert.match(lines[0]!, c.message, c.yaml);
    // Refused before the index is opened or any default file is written.
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f !== LOCK_FILE).sort(), ['couchestor.yaml'], c.yaml);
  }
});

test('the embedded default, and a file that spells out every setting, are accepted', (t) => {
  const dir = tempDir(t);
  const cfg = loadConfig(dir); // writes the embedded default, then reads it back
  assert.equal(cfg.control.reconcileIntervalMs, 30_000);
  const again = tempDir(t);
  fs.writeFileSync(
    path.join(again, 'couchestor.yaml'),
    [
      'listenHost: 127.0.0.1',
      'nbd: {port: 0, socketPath: nbd.sock}',
      'api: {port: 0}',
      'metrics: {port: 0}',
      's3: {port: 0, domains: [s3.example.internal], bodyIdleTimeoutMs: 20000, sendIdleTimeoutMs: 60000}',
      'pools:',
      '  - {name: hot-0, tier: hot, path: pools/hot-0, capacity: auto, labels: {disk: nvme}}',
      '  - {name: cold-0, tier: cold, path: pools/cold-0, capacity: 1073741824}',
      'coldTier: {ecPolicyFile: policies/ec.yaml, journalCapacityBytes: 4194304, destageIntervalMs: 100, destageThresholdPercent: 25, segmentSizeBytes: 1048576, compaction: {intervalMs: 0, deadFraction: 0.5, maxBytesPerSecond: 1000}}',
      'cache: {l1CapacityBytes: 0, l2CapacityBytes: 0, l2MinEntryBytes: 0, lz4ThresholdBytes: null}',
      'control: {policiesDir: policies, reconcileIntervalMs: 100, preservationMode: true, heatSampleIntervalMs: 10, heatSource: {type: prometheus, url: "http://127.0.0.1:9090"}}',
      'demoVolume: null',
      'defaultExport: ""',
      '',
    ].join('\n'),
  );
  const full = loadConfig(again);
  // A Prometheus source without `metrics` queries the seed's metric names, as before.
  assert.deepEqual(full.control.heatSource, { type: 'prometheus', url: 'http://127.0.0.1:9090', metrics: 'seed' });
  assert.equal(full.pools[0]!.labels!.disk, 'nvme');
});
