// Hardware scan of this machine's real /sys, checked against lsblk and the
// root mount: whatever disks the machine has, the scan must find the same ones
// with the same geometry, including the disk that holds /.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { scanHardware } from '../src/control/hardware/index.js';

const run = promisify(execFile);

interface LsblkDevice {
  name: string;
  'maj:min': string;
  type: string;
  pkname: string | null;
  size: number | string;
  rota: boolean | string;
  'log-sec': number | string;
  'phy-sec': number | string;
  zoned: string | null;
}

// Older util-linux prints every value as a string; newer ones use JSON types.
const asBool = (v: boolean | string): boolean => v === true || v === '1' || v === 'true';
const NOT_POOL_CANDIDATES = /^(loop|ram|zram|dm-|sr|fd|nbd)/;

async function lsblk(): Promise<LsblkDevice[]> {
  const { stdout } = await run('lsblk', ['-J', '-b', '-l', '-o', 'NAME,MAJ:MIN,TYPE,PKNAME,SIZE,ROTA,LOG-SEC,PHY-SEC,ZONED']);
  return (JSON.parse(stdout) as { blockdevices: LsblkDevice[] }).blockdevices;
}

/** major:minor of the device mounted at /, from mountinfo (field 3). */
async function rootMajorMinor(): Promise<string> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const line = mountinfo.split('\n').find((l) => l.split(' ')[4] === '/');
  assert.ok(line, 'a mount at / in /proc/self/mountinfo');
  return line.split(' ')[2] as string;
}

test('real /sys: every whole disk lsblk lists is in the scan with the same size and geometry', async () => {
  const [report, devices] = await Promise.all([scanHardware({ runSmart: false }), lsblk()]);
  // Whole disks and md arrays (lsblk -l repeats an md array once per member: dedupe by name).
  const expected = [
    ...new Map(
      devices
        .filter((d) => (d.type === 'disk' || d.type.startsWith('raid')) && Number(d.size) > 0 && !NOT_POOL_CANDIDATES.test(d.name))
        .map((d) => [d.name, d]),
    ).values(),
  ];
  assert.ok(expected.length > 0, 'lsblk lists at least one disk on this machine');
  assert.deepEqual(
    report.disks.map((d) => d.name).sort(),
    expected.map((d) => d.name).sort(),
  );
  for (const want of expected) {
    const got = report.disks.find((d) => d.name === want.name);
    assert.ok(got);
    assert.equal(got.majorMinor, want['maj:min'], `${want.name} major:minor`);
    assert.equal(got.capacityBytes, Number(want.size), `${want.name} capacity`);
    assert.equal(got.rotational, asBool(want.rota), `${want.name} rotational`);
    assert.equal(got.logicalBlockSizeBytes, Number(want['log-sec']), `${want.name} logical block size`);
    assert.equal(got.physicalBlockSizeBytes, Number(want['phy-sec']), `${want.name} physical block size`);
    assert.equal(got.zoned, want.zoned ?? 'none', `${want.name} zoned`);
    assert.equal(got.devicePath, `/dev/${want.name}`);
    assert.equal(got.suggestedTier, got.zoned !== 'none' || got.rotational ? 'cold' : got.transport === 'nvme' ? 'hot' : 'warm');
  }
  // Partitions lsblk lists are skipped as partitions, never reported as disks.
  for (const p of devices.filter((d) => d.type === 'part')) {
    assert.deepEqual(report.skipped.find((s) => s.name === p.name), { name: p.name, reason: 'partition' });
  }
});

test('real /sys: the disk holding / is found, whether / is on the disk or on one of its partitions', async () => {
  const [report, devices, rootMm] = await Promise.all([scanHardware({ runSmart: false }), lsblk(), rootMajorMinor()]);
  let node = devices.find((d) => d['maj:min'] === rootMm);
  if (node === undefined) {
    // / is not on a block device (overlay or tmpfs root in a container): then the
    // machine's disks are only checked by the lsblk comparison above.
    assert.match(rootMm, /^0:\d+$/, `root ${rootMm} is either a block device lsblk knows or an anonymous (0:N) mount`);
    return;
  }
  // Walk up partition / device-mapper parents to the whole disk.
  while (node.type !== 'disk' && node.pkname !== null) {
    const parent: string = node.pkname;
    node = devices.find((d) => d.name === parent);
    assert.ok(node, `lsblk parent ${parent}`);
  }
  const rootDisk = report.disks.find((d) => d.name === node.name);
  assert.ok(rootDisk, `root disk ${node.name} (holding ${rootMm}) in the scan`);
  assert.equal(rootDisk.capacityBytes, Number(node.size));
});

test('real /sys with SMART: each disk gets a per-device SMART outcome, never an exception', async () => {
  const report = await scanHardware({});
  assert.ok(report.disks.length > 0);
  for (const d of report.disks) {
    if (d.nvme !== null) continue;
    if (report.tools.smartctl === null) {
      assert.deepEqual(d.smart, { available: false, state: 'unavailable', reason: 'smartctl not installed' });
    } else {
      assert.ok(d.smart.state === 'ok' || d.smart.state === 'failed', `${d.name}: ${JSON.stringify(d.smart)}`);
      assert.equal(d.smart.command, `smartctl --json -a ${d.devicePath}`);
      if (d.smart.state === 'failed') assert.match(d.smart.reason, /^exit status \d+: \S/);
      // virtio disks carry no SMART data; smartctl says so and we pass its words on.
      if (d.transport === 'virtio') assert.deepEqual(d.smart, {
        available: false,
        state: 'failed',
        tool: 'smartctl',
        command: `smartctl --json -a ${d.devicePath}`,
        reason: `exit status 1: ${d.devicePath}: Unable to detect device type`,
      });
    }
  }
});
