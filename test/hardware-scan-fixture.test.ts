// Hardware scan over the fixture sysfs tree (test/fixtures/sysfs/root, built by
// build-fixture.sh): every reported field of the NVMe controller, its plain and
// zoned namespaces, the SATA SSD and the SAS HDD, and the tier each gets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { scanHardware, formatHardwareTable, HardwareScanError, type DiskInfo } from '../src/control/hardware/index.js';

const SYS_ROOT = fileURLToPath(new URL('../../test/fixtures/sysfs/root', import.meta.url));
const GIB = 1024 ** 3;

function disk(disks: DiskInfo[], name: string): DiskInfo {
  const found = disks.find((d) => d.name === name);
  assert.ok(found, `disk ${name} in report`);
  return found;
}

const SKIPPED_SMART = { available: false, state: 'skipped', reason: 'SMART not requested' } as const;

test('fixture scan reports exactly the four pool-candidate disks and skips the rest with reasons', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, devRoot: '/dev', runSmart: false });
  assert.deepEqual(
    report.disks.map((d) => d.name),
    ['nvme0n1', 'nvme0n2', 'sda', 'sdb'],
  );
  assert.deepEqual(report.skipped, [
    { name: 'loop0', reason: 'loop device' },
    { name: 'nvme0n1p1', reason: 'partition' },
    { name: 'sda1', reason: 'partition' },
  ]);
  assert.equal(report.sysRoot, SYS_ROOT);
  assert.equal(report.devRoot, '/dev');
  assert.ok(!Number.isNaN(Date.parse(report.scannedAt)));
});

test('NVMe namespace nvme0n1: identity from its controller, 512-byte LBAs, hot tier', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, runSmart: false });
  assert.deepEqual(disk(report.disks, 'nvme0n1'), {
    name: 'nvme0n1',
    devicePath: '/dev/nvme0n1',
    sysfsPath: 'devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1',
    majorMinor: '259:0',
    transport: 'nvme',
    driver: null,
    capacityBytes: 400 * GIB,
    rotational: false,
    logicalBlockSizeBytes: 512,
    physicalBlockSizeBytes: 4096,
    zoned: 'none',
    zoneCount: null,
    zoneSizeBytes: null,
    removable: false,
    readOnly: false,
    vendor: null,
    model: 'QEMU NVMe Ctrl',
    serial: 'CSTOR-ZNS-0001',
    wwid: 'eui.00000000000000011b36000000000001',
    firmwareRevision: '8.2.2',
    nvme: { controller: 'nvme0', controllers: ['nvme0'], nsid: 1, metadataBytes: 0, commandSetId: 0 },
    scsi: null,
    smart: SKIPPED_SMART,
    suggestedTier: 'hot',
    tierReason: 'NVMe namespace, not zoned, non-rotational',
  });
});

test('zoned NVMe namespace nvme0n2: host-managed, zone geometry, cold tier', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, runSmart: false });
  assert.deepEqual(disk(report.disks, 'nvme0n2'), {
    name: 'nvme0n2',
    devicePath: '/dev/nvme0n2',
    sysfsPath: 'devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n2',
    majorMinor: '259:1',
    transport: 'nvme',
    driver: null,
    capacityBytes: 32 * GIB,
    rotational: false,
    logicalBlockSizeBytes: 4096,
    physicalBlockSizeBytes: 4096,
    zoned: 'host-managed',
    zoneCount: 256,
    zoneSizeBytes: 128 * 1024 * 1024,
    removable: false,
    readOnly: false,
    vendor: null,
    model: 'QEMU NVMe Ctrl',
    serial: 'CSTOR-ZNS-0001',
    wwid: 'eui.00000000000000021b36000000000002',
    firmwareRevision: '8.2.2',
    nvme: { controller: 'nvme0', controllers: ['nvme0'], nsid: 2, metadataBytes: 0, commandSetId: 2 },
    scsi: null,
    smart: SKIPPED_SMART,
    suggestedTier: 'cold',
    tierReason: "zoned (host-managed): sequential-write zones suit the cold tier's append-only stripes",
  });
});

test('NVMe controller nvme0: identity attributes trimmed of padding, both namespaces listed', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, runSmart: false });
  assert.deepEqual(report.nvmeControllers, [
    {
      name: 'nvme0',
      devicePath: '/dev/nvme0',
      sysfsPath: 'devices/pci0000:00/0000:00:04.0/nvme/nvme0',
      model: 'QEMU NVMe Ctrl',
      serial: 'CSTOR-ZNS-0001',
      firmwareRevision: '8.2.2',
      transport: 'pcie',
      address: '0000:00:04.0',
      state: 'live',
      subsystemNqn: 'nqn.2019-08.org.qemu:CSTOR-ZNS-0001',
      namespaces: [
        {
          name: 'nvme0n1',
          nsid: 1,
          capacityBytes: 400 * GIB,
          logicalBlockSizeBytes: 512,
          metadataBytes: 0,
          lbaFormat: '512 + 0',
          zoned: false,
          zonedModel: 'none',
          suggestedTier: 'hot',
        },
        {
          name: 'nvme0n2',
          nsid: 2,
          capacityBytes: 32 * GIB,
          logicalBlockSizeBytes: 4096,
          metadataBytes: 0,
          lbaFormat: '4096 + 0',
          zoned: true,
          zonedModel: 'host-managed',
          suggestedTier: 'cold',
        },
      ],
      smart: SKIPPED_SMART,
    },
  ]);
});

test('SATA SSD sda: vendor ATA means SATA, serial from VPD page 0x80, warm tier', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, runSmart: false });
  assert.deepEqual(disk(report.disks, 'sda'), {
    name: 'sda',
    devicePath: '/dev/sda',
    sysfsPath: 'devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda',
    majorMinor: '8:0',
    transport: 'sata',
    driver: 'sd',
    capacityBytes: 1953525168 * 512,
    rotational: false,
    logicalBlockSizeBytes: 512,
    physicalBlockSizeBytes: 512,
    zoned: 'none',
    zoneCount: null,
    zoneSizeBytes: null,
    removable: false,
    readOnly: false,
    vendor: 'ATA',
    model: 'Samsung SSD 870',
    serial: 'S6PTNZ0R123456A',
    wwid: 'naa.5002538f42b1c3d4',
    firmwareRevision: '2B6Q',
    nvme: null,
    scsi: { hctl: '0:0:0:0', protocol: 'sata', scsiType: 0 },
    smart: SKIPPED_SMART,
    suggestedTier: 'warm',
    tierReason: 'SATA SSD (non-rotational)',
  });
});

test('SAS HDD sdb: non-ATA vendor means SAS, rotational, 512e, cold tier', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, runSmart: false });
  assert.deepEqual(disk(report.disks, 'sdb'), {
    name: 'sdb',
    devicePath: '/dev/sdb',
    sysfsPath:
      'devices/pci0000:00/0000:00:01.0/0000:02:00.0/host1/port-1:0/end_device-1:0/target1:0:0/1:0:0:0/block/sdb',
    majorMinor: '8:16',
    transport: 'sas',
    driver: 'sd',
    capacityBytes: 7814037168 * 512,
    rotational: true,
    logicalBlockSizeBytes: 512,
    physicalBlockSizeBytes: 4096,
    zoned: 'none',
    zoneCount: null,
    zoneSizeBytes: null,
    removable: false,
    readOnly: false,
    vendor: 'SEAGATE',
    model: 'ST4000NM0023',
    serial: 'Z1Z3ABCD0000C5012345',
    wwid: 'naa.5000c500a1b2c3d7',
    firmwareRevision: '0004',
    nvme: null,
    scsi: { hctl: '1:0:0:0', protocol: 'sas', scsiType: 0 },
    smart: SKIPPED_SMART,
    suggestedTier: 'cold',
    tierReason: 'rotational (queue/rotational=1)',
  });
});

test('devRoot moves the device paths the SMART tools would open', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, devRoot: '/tmp/hw-work/dev', runSmart: false });
  assert.deepEqual(
    report.disks.map((d) => d.devicePath),
    ['/tmp/hw-work/dev/nvme0n1', '/tmp/hw-work/dev/nvme0n2', '/tmp/hw-work/dev/sda', '/tmp/hw-work/dev/sdb'],
  );
  assert.equal(report.nvmeControllers[0]?.devicePath, '/tmp/hw-work/dev/nvme0');
});

test('table shows one row per disk with its tier, the controller with its namespaces, and the skipped devices', async () => {
  const report = await scanHardware({ sysRoot: SYS_ROOT, runSmart: false });
  const lines = formatHardwareTable(report).split('\n');
  assert.match(lines[0] ?? '', /^DISK\s+TRANSPORT\s+CAPACITY\s+LBS\/PBS\s+ROT\s+ZONED\s+MODEL\s+SERIAL\s+SMART\s+TIER\s+REASON$/);
  assert.match(lines[1] ?? '', /^nvme0n1\s+nvme\s+400 GiB\s+512\/4096\s+no\s+none\s+QEMU NVMe Ctrl\s+CSTOR-ZNS-0001\s+-\s+hot\s+NVMe namespace/);
  assert.match(lines[2] ?? '', /^nvme0n2\s+nvme\s+32\.0 GiB\s+4096\/4096\s+no\s+host-managed\s+.*\s+cold\s+zoned \(host-managed\)/);
  assert.match(lines[3] ?? '', /^sda\s+sata\s+932 GiB\s+512\/512\s+no\s+none\s+Samsung SSD 870\s+S6PTNZ0R123456A\s+-\s+warm\s+SATA SSD/);
  assert.match(lines[4] ?? '', /^sdb\s+sas\s+3\.64 TiB\s+512\/4096\s+yes\s+none\s+ST4000NM0023\s+Z1Z3ABCD0000C5012345\s+-\s+cold\s+rotational/);
  assert.equal(lines[5], '');
  assert.match(lines[6] ?? '', /^CONTROLLER\s+TRANSPORT\s+ADDRESS\s+STATE\s+MODEL\s+SERIAL\s+FIRMWARE\s+SMART\s+NAMESPACES$/);
  assert.match(
    lines[7] ?? '',
    /^nvme0\s+pcie\s+0000:00:04\.0\s+live\s+QEMU NVMe Ctrl\s+CSTOR-ZNS-0001\s+8\.2\.2\s+-\s+nvme0n1 \(nsid 1, 400 GiB, LBA 512 \+ 0\); nvme0n2 \(nsid 2, 32\.0 GiB, LBA 4096 \+ 0, zoned\)$/,
  );
  assert.equal(lines.at(-2), 'skipped: loop0 (loop device), nvme0n1p1 (partition), sda1 (partition)');
});

test('a root without sysfs block class is a HardwareScanError, not an empty report', async () => {
  const empty = await mkdtemp(join(tmpdir(), 'hw-empty-sys-'));
  try {
    await assert.rejects(scanHardware({ sysRoot: empty, runSmart: false }), (err: unknown) => {
      assert.ok(err instanceof HardwareScanError);
      assert.match(err.message, /no sysfs block class at .*class\/block/);
      return true;
    });
  } finally {
    await rm(empty, { recursive: true });
  }
});

test('NVMe multipath layout: the head disk is reported once with both controllers, per-path disks are skipped', async () => {
  const sysRoot = fileURLToPath(new URL('../../test/fixtures/sysfs/root-multipath', import.meta.url));
  const report = await scanHardware({ sysRoot, runSmart: false });
  assert.deepEqual(report.skipped, [
    { name: 'nvme0c0n1', reason: 'hidden multipath path device' },
    { name: 'nvme0c1n1', reason: 'hidden multipath path device' },
  ]);
  assert.equal(report.disks.length, 1);
  const head = disk(report.disks, 'nvme0n1');
  assert.equal(head.sysfsPath, 'devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1');
  assert.equal(head.transport, 'nvme');
  assert.deepEqual(head.nvme, { controller: 'nvme0', controllers: ['nvme0', 'nvme1'], nsid: 1, metadataBytes: 0, commandSetId: 0 });
  // Identity comes from the subsystem the head hangs off.
  assert.equal(head.model, 'SAMSUNG MZWLR3T8HCLS-00A07');
  assert.equal(head.serial, 'S6CRNA0R500123');
  assert.equal(head.firmwareRevision, 'MPK7525Q');
  assert.equal(head.capacityBytes, 1024 * GIB);
  assert.equal(head.suggestedTier, 'hot');
  assert.deepEqual(
    report.nvmeControllers.map((c) => [c.name, c.address, c.namespaces.map((n) => n.name)]),
    [
      ['nvme0', '0000:00:04.0', ['nvme0n1']],
      ['nvme1', '0000:00:05.0', ['nvme0n1']],
    ],
  );
});
