// SMART in the hardware scan: reading smartctl / nvme-cli JSON, reporting an
// absent tool as unavailable, and a failing tool as a per-device failure.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { access } from 'node:fs/promises';
import {
  parseNvmeSmartLogJson,
  parseSmartctlJson,
  scanHardware,
  formatHardwareTable,
} from '../src/control/hardware/index.js';

const SYS_ROOT = fileURLToPath(new URL('../../test/fixtures/sysfs/root', import.meta.url));

// Trimmed `smartctl --json -a` outputs in smartctl 7.x's layout.
const SMARTCTL_SATA_SSD = {
  json_format_version: [1, 0],
  smartctl: { version: [7, 3], exit_status: 0 },
  device: { name: '/dev/sda', type: 'sat', protocol: 'ATA' },
  model_family: 'Samsung based SSDs',
  model_name: 'Samsung SSD 870 EVO 1TB',
  serial_number: 'S6PTNZ0R123456A',
  firmware_version: 'SVT02B6Q',
  smart_status: { passed: true },
  ata_smart_attributes: {
    revision: 1,
    table: [
      { id: 5, name: 'Reallocated_Sector_Ct', value: 100, raw: { value: 0, string: '0' } },
      { id: 9, name: 'Power_On_Hours', value: 99, raw: { value: 5123, string: '5123' } },
      { id: 187, name: 'Reported_Uncorrect', value: 100, raw: { value: 2, string: '2' } },
    ],
  },
  power_on_time: { hours: 5123 },
  temperature: { current: 31 },
};

const SMARTCTL_NVME = {
  json_format_version: [1, 0],
  smartctl: { version: [7, 3], exit_status: 0 },
  device: { name: '/dev/nvme0', type: 'nvme', protocol: 'NVMe' },
  model_name: 'Samsung SSD 980 PRO 2TB',
  serial_number: 'S6B0NL0T000001X',
  firmware_version: '5B2QGXA7',
  smart_status: { passed: true, nvme: { value: 0 } },
  nvme_smart_health_information_log: {
    critical_warning: 0,
    temperature: 44,
    available_spare: 100,
    percentage_used: 3,
    power_on_hours: 8812,
    media_errors: 0,
  },
  temperature: { current: 44 },
  power_on_time: { hours: 8812 },
};

const SMARTCTL_SAS_HDD = {
  json_format_version: [1, 0],
  smartctl: { version: [7, 3], exit_status: 0 },
  device: { name: '/dev/sdb', type: 'scsi', protocol: 'SCSI' },
  scsi_vendor: 'SEAGATE',
  scsi_product: 'ST4000NM0023',
  scsi_model_name: 'SEAGATE ST4000NM0023',
  scsi_revision: '0004',
  serial_number: 'Z1Z3ABCD0000C5012345',
  smart_status: { passed: false },
  temperature: { current: 38 },
  power_on_time: { hours: 40211, minutes: 12 },
  scsi_error_counter_log: {
    read: { total_errors_corrected: 12, total_uncorrected_errors: 1 },
    write: { total_errors_corrected: 0, total_uncorrected_errors: 2 },
  },
};

test('smartctl JSON of a SATA SSD: verdict, temperature, hours, Reported_Uncorrect as media errors, full model', () => {
  assert.deepEqual(parseSmartctlJson(SMARTCTL_SATA_SSD), {
    healthPassed: true,
    temperatureCelsius: 31,
    powerOnHours: 5123,
    percentageUsed: null,
    mediaErrors: 2,
    criticalWarning: null,
    modelName: 'Samsung SSD 870 EVO 1TB',
    serialNumber: 'S6PTNZ0R123456A',
    firmwareVersion: 'SVT02B6Q',
  });
});

test('smartctl JSON of an NVMe drive: health log fields', () => {
  assert.deepEqual(parseSmartctlJson(SMARTCTL_NVME), {
    healthPassed: true,
    temperatureCelsius: 44,
    powerOnHours: 8812,
    percentageUsed: 3,
    mediaErrors: 0,
    criticalWarning: 0,
    modelName: 'Samsung SSD 980 PRO 2TB',
    serialNumber: 'S6B0NL0T000001X',
    firmwareVersion: '5B2QGXA7',
  });
});

test('smartctl JSON of a failing SAS HDD: FAILED verdict, uncorrected read+write errors summed', () => {
  assert.deepEqual(parseSmartctlJson(SMARTCTL_SAS_HDD), {
    healthPassed: false,
    temperatureCelsius: 38,
    powerOnHours: 40211,
    percentageUsed: null,
    mediaErrors: 3,
    criticalWarning: null,
    modelName: 'SEAGATE ST4000NM0023',
    serialNumber: 'Z1Z3ABCD0000C5012345',
    firmwareVersion: '0004',
  });
});

test('nvme smart-log JSON: kelvin to celsius, critical warning as number or object, wear', () => {
  const v2 = { critical_warning: 0, temperature: 317, avail_spare: 100, spare_thresh: 10, percent_used: 7, power_on_hours: 1200, media_errors: 0 };
  assert.deepEqual(parseNvmeSmartLogJson(v2), {
    healthPassed: true,
    temperatureCelsius: 44,
    powerOnHours: 1200,
    percentageUsed: 7,
    mediaErrors: 0,
    criticalWarning: 0,
    modelName: null,
    serialNumber: null,
    firmwareVersion: null,
  });
  const newer = { ...v2, critical_warning: { value: 4 }, media_errors: '17' };
  const parsed = parseNvmeSmartLogJson(newer);
  assert.equal(parsed.criticalWarning, 4);
  assert.equal(parsed.healthPassed, false);
  assert.equal(parsed.mediaErrors, 17);
});

test('no SMART tool installed: every disk and controller reports unavailable with the reason, the scan succeeds', async () => {
  const emptyBin = await mkdtemp(join(tmpdir(), 'hw-nobin-'));
  try {
    const report = await scanHardware({ sysRoot: SYS_ROOT, toolSearchPath: emptyBin });
    assert.deepEqual(report.tools, { smartctl: null, nvme: null });
    const bySmart = Object.fromEntries(report.disks.map((d) => [d.name, d.smart]));
    assert.deepEqual(bySmart, {
      nvme0n1: { available: false, state: 'unavailable', reason: 'nvme-cli and smartctl not installed' },
      nvme0n2: { available: false, state: 'unavailable', reason: 'nvme-cli and smartctl not installed' },
      sda: { available: false, state: 'unavailable', reason: 'smartctl not installed' },
      sdb: { available: false, state: 'unavailable', reason: 'smartctl not installed' },
    });
    assert.deepEqual(report.nvmeControllers[0]?.smart, { available: false, state: 'unavailable', reason: 'nvme-cli and smartctl not installed' });
    const table = formatHardwareTable(report);
    assert.match(table, /\nSMART:\n {2}nvme0: nvme-cli and smartctl not installed\n {2}sda: smartctl not installed\n {2}sdb: smartctl not installed\n/);
  } finally {
    await rm(emptyBin, { recursive: true });
  }
});

test('a SMART tool that exits non-zero without output is a per-device failure, other devices unaffected', async () => {
  // /bin/false stands in for a broken install: it runs, prints nothing and exits 1.
  const bin = await mkdtemp(join(tmpdir(), 'hw-falsebin-'));
  try {
    await symlink('/bin/false', join(bin, 'smartctl'));
    const report = await scanHardware({ sysRoot: SYS_ROOT, devRoot: '/tmp/hw-work/nodev', toolSearchPath: bin });
    assert.equal(report.tools.smartctl, join(bin, 'smartctl'));
    assert.equal(report.tools.nvme, null);
    const sda = report.disks.find((d) => d.name === 'sda');
    assert.deepEqual(sda?.smart, {
      available: false,
      state: 'failed',
      tool: 'smartctl',
      command: 'smartctl --json -a /tmp/hw-work/nodev/sda',
      reason: 'exit status 1: output is not JSON',
    });
    // The NVMe controller falls back to smartctl when nvme-cli is missing.
    assert.deepEqual(report.nvmeControllers[0]?.smart, {
      available: false,
      state: 'failed',
      tool: 'smartctl',
      command: 'smartctl --json -a /tmp/hw-work/nodev/nvme0',
      reason: 'exit status 1: output is not JSON',
    });
    assert.equal(report.disks.length, 4);
    assert.equal(report.disks.find((d) => d.name === 'sdb')?.suggestedTier, 'cold');
  } finally {
    await rm(bin, { recursive: true });
  }
});

async function installed(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

test('the real smartctl and nvme-cli, pointed at device nodes that do not exist, fail per device with their own message', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, devRoot: '/tmp/hw-work/nodev' });
  const sdb = report.disks.find((d) => d.name === 'sdb');
  if (report.tools.smartctl !== null) {
    assert.ok(await installed(report.tools.smartctl));
    assert.equal(sdb?.smart.state, 'failed');
    assert.ok(sdb?.smart.state === 'failed');
    assert.equal(sdb.smart.command, 'smartctl --json -a /tmp/hw-work/nodev/sdb');
    // smartctl 7.x: "Unable to detect device type" or "... failed: No such device".
    assert.match(sdb.smart.reason, /^exit status [12]: .*\/tmp\/hw-work\/nodev\/sdb/);
  } else {
    assert.deepEqual(sdb?.smart, { available: false, state: 'unavailable', reason: 'smartctl not installed' });
  }
  const ctrl = report.nvmeControllers[0];
  if (report.tools.nvme !== null) {
    assert.ok(ctrl?.smart.state === 'failed');
    assert.equal(ctrl.smart.tool, 'nvme');
    assert.equal(ctrl.smart.command, 'nvme smart-log -o json /tmp/hw-work/nodev/nvme0');
    assert.match(ctrl.smart.reason, /^exit status \d+: .*No such file or directory/);
    // The namespaces share their controller's SMART outcome.
    assert.deepEqual(report.disks.find((d) => d.name === 'nvme0n2')?.smart, ctrl.smart);
  } else {
    assert.notEqual(ctrl?.smart.state, 'ok');
  }
});
