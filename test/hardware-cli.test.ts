// `couchestor hardware scan` argument handling: --json, --sys-root, --no-smart,
// usage errors (exit 2) and an unreadable sysfs root (exit 1).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { runHardwareScanCli, type HardwareReport } from '../src/control/hardware/index.js';

const SYS_ROOT = fileURLToPath(new URL('../../test/fixtures/sysfs/root', import.meta.url));

async function cli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runHardwareScanCli(argv, {
    stdout: { write: (t: string) => (stdout += t) },
    stderr: { write: (t: string) => (stderr += t) },
  });
  return { code, stdout, stderr };
}

test('--json --sys-root DIR --no-smart prints the report as JSON and exits 0', async () => {
  const { code, stdout, stderr } = await cli(['--json', '--sys-root', SYS_ROOT, '--no-smart']);
  assert.equal(code, 0);
  assert.equal(stderr, '');
  const report = JSON.parse(stdout) as HardwareReport;
  assert.equal(report.sysRoot, SYS_ROOT);
  assert.deepEqual(
    report.disks.map((d) => [d.name, d.transport, d.suggestedTier, d.smart.state]),
    [
      ['nvme0n1', 'nvme', 'hot', 'skipped'],
      ['nvme0n2', 'nvme', 'cold', 'skipped'],
      ['sda', 'sata', 'warm', 'skipped'],
      ['sdb', 'sas', 'cold', 'skipped'],
    ],
  );
});

test('without --json the table is printed; --sys-root=DIR form is accepted', async () => {
  const { code, stdout } = await cli([`--sys-root=${SYS_ROOT}`, '--no-smart']);
  assert.equal(code, 0);
  assert.match(stdout, /^DISK\s+TRANSPORT\s+CAPACITY/);
  assert.match(stdout, /\nsdb\s+sas\s+3\.64 TiB/);
});

test('an unknown flag or a --sys-root without a value is a usage error, exit 2', async () => {
  const unknown = await cli(['--bogus']);
  assert.equal(unknown.code, 2);
  assert.equal(unknown.stdout, '');
  assert.match(unknown.stderr, /^unknown argument: --bogus\nusage: couchestor hardware scan/);
  const missing = await cli(['--sys-root']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^--sys-root needs a directory\n/);
});

test('a --sys-root that is not sysfs exits 1 with the reason on stderr', async () => {
  const { code, stdout, stderr } = await cli(['--sys-root', '/tmp/hw-work/not-a-sysfs', '--no-smart']);
  assert.equal(code, 1);
  assert.equal(stdout, '');
  assert.equal(stderr, 'hardware scan: no sysfs block class at /tmp/hw-work/not-a-sysfs/class/block: is /tmp/hw-work/not-a-sysfs a mounted sysfs?\n');
});

test('--help prints usage and exits 0', async () => {
  const { code, stdout } = await cli(['--help']);
  assert.equal(code, 0);
  assert.match(stdout, /--no-smart/);
});
