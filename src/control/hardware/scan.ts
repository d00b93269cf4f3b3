// Hardware discovery for `couchestor hardware scan`: walks sysfs (block, nvme,
// scsi_disk classes), reads SMART through the system's tools, and suggests a
// tier per disk. Read-only: never opens a device for I/O.

import { basename, dirname, join } from 'node:path';
import {
  compareNatural,
  exists,
  linkTargetName,
  listDir,
  parseVpdSerial,
  readAttr,
  readBytes,
  readInt,
  readUevent,
  relativeTo,
  resolve,
} from './sysfs.js';
import { defaultToolSearchPath, findTool, nvmeSmartLogReport, smartctlReport } from './smart.js';
import {
  HardwareScanError,
  type DiskInfo,
  type DiskTransport,
  type HardwareReport,
  type NvmeControllerInfo,
  type NvmeNamespaceRef,
  type ScanOptions,
  type ScsiRef,
  type SkippedBlockDevice,
  type SmartReport,
  type Tier,
  type ZonedModel,
} from './types.js';

/** The kernel counts `size` in 512-byte sectors whatever the device's block size. */
const SECTOR_BYTES = 512;
/** SMART tools run in parallel up to this many at once: a node with 24 disks should not fork 24 smartctl. */
const SMART_CONCURRENCY = 4;

// Block devices that are never pool candidates: virtual (loop, ram, zram,
// device-mapper), optical and floppy, and NBD (CoucheStor's own volumes may be
// attached through it; a pool on one would store the volume inside itself).
const SKIPPED_PREFIXES: ReadonlyArray<readonly [string, string]> = [
  ['loop', 'loop device'],
  ['ram', 'ram disk'],
  ['zram', 'compressed ram disk'],
  ['dm-', 'device-mapper target'],
  ['sr', 'optical drive'],
  ['fd', 'floppy drive'],
  ['nbd', 'network block device'],
];

interface ScsiDeviceInfo {
  hctl: string;
  vendor: string | null;
  model: string | null;
  revision: string | null;
  wwid: string | null;
  serial: string | null;
  scsiType: number | null;
}

type ControllerDraft = Omit<NvmeControllerInfo, 'namespaces' | 'smart'>;

function parseZoned(text: string | null): ZonedModel {
  return text === 'host-aware' || text === 'host-managed' ? text : 'none';
}

async function readScsiDisks(sysRoot: string): Promise<Map<string, ScsiDeviceInfo>> {
  const byBlockName = new Map<string, ScsiDeviceInfo>();
  const classDir = join(sysRoot, 'class', 'scsi_disk');
  for (const hctl of (await listDir(classDir)) ?? []) {
    const scsiDevice = await resolve(join(classDir, hctl, 'device'));
    if (scsiDevice === null) continue;
    const info: ScsiDeviceInfo = {
      hctl,
      vendor: await readAttr(join(scsiDevice, 'vendor')),
      model: await readAttr(join(scsiDevice, 'model')),
      revision: await readAttr(join(scsiDevice, 'rev')),
      wwid: await readAttr(join(scsiDevice, 'wwid')),
      serial: parseVpdSerial(await readBytes(join(scsiDevice, 'vpd_pg80'))),
      scsiType: await readInt(join(scsiDevice, 'type')),
    };
    for (const blockName of (await listDir(join(scsiDevice, 'block'))) ?? []) byBlockName.set(blockName, info);
  }
  return byBlockName;
}

async function readNvmeControllers(sysRoot: string, devRoot: string, realSysRoot: string): Promise<ControllerDraft[]> {
  const classDir = join(sysRoot, 'class', 'nvme');
  const out: ControllerDraft[] = [];
  for (const name of (await listDir(classDir)) ?? []) {
    const dir = await resolve(join(classDir, name));
    if (dir === null) continue;
    out.push({
      name,
      devicePath: join(devRoot, name),
      sysfsPath: relativeTo(realSysRoot, dir),
      model: await readAttr(join(dir, 'model')),
      serial: await readAttr(join(dir, 'serial')),
      firmwareRevision: await readAttr(join(dir, 'firmware_rev')),
      transport: await readAttr(join(dir, 'transport')),
      address: await readAttr(join(dir, 'address')),
      state: await readAttr(join(dir, 'state')),
      subsystemNqn: await readAttr(join(dir, 'subsysnqn')),
    });
  }
  return out;
}

/**
 * Which controllers a namespace block device hangs off. Without NVMe multipath
 * the disk lives under its controller (.../nvme/nvme0/nvme0n1); with it, under
 * a subsystem head (virtual/nvme-subsystem/nvme-subsys0/nvme0n1) that links to
 * every controller reaching it.
 */
async function nvmeControllersOf(realDir: string): Promise<string[] | null> {
  const parent = dirname(realDir);
  const parentName = basename(parent);
  if (/^nvme\d+$/.test(parentName) && basename(dirname(parent)) === 'nvme') return [parentName];
  if (/^nvme-subsys\d+$/.test(parentName)) {
    const entries = (await listDir(parent)) ?? [];
    return entries.filter((e) => /^nvme\d+$/.test(e));
  }
  return null;
}

function suggestTier(disk: Pick<DiskInfo, 'zoned' | 'rotational' | 'transport'>): { tier: Tier; reason: string } {
  if (disk.zoned !== 'none') {
    return { tier: 'cold', reason: `zoned (${disk.zoned}): sequential-write zones suit the cold tier's append-only stripes` };
  }
  if (disk.rotational) {
    const note = disk.transport === 'virtio' ? '; virtual disk, flag as the hypervisor reports it' : '';
    return { tier: 'cold', reason: `rotational (queue/rotational=1)${note}` };
  }
  switch (disk.transport) {
    case 'nvme':
      return { tier: 'hot', reason: 'NVMe namespace, not zoned, non-rotational' };
    case 'sata':
      return { tier: 'warm', reason: 'SATA SSD (non-rotational)' };
    case 'sas':
      return { tier: 'warm', reason: 'SAS SSD (non-rotational)' };
    default:
      return { tier: 'warm', reason: `non-rotational ${disk.transport} disk` };
  }
}

async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  });
  await Promise.all(workers);
  return results;
}

type DiskDraft = Omit<DiskInfo, 'smart' | 'suggestedTier' | 'tierReason'>;

async function readDisk(
  name: string,
  realDir: string,
  ctx: { devRoot: string; realSysRoot: string; scsi: Map<string, ScsiDeviceInfo> },
): Promise<DiskDraft> {
  const uevent = await readUevent(realDir);
  const zoned = parseZoned(await readAttr(join(realDir, 'queue', 'zoned')));
  const sizeSectors = (await readInt(join(realDir, 'size'))) ?? 0;
  const chunkSectors = await readInt(join(realDir, 'queue', 'chunk_sectors'));
  const driver = await linkTargetName(join(realDir, 'device', 'driver'));

  let transport: DiskTransport = 'other';
  let nvme: NvmeNamespaceRef | null = null;
  let scsi: ScsiRef | null = null;
  let vendor: string | null = null;
  let model: string | null = null;
  let serial: string | null = null;
  let wwid: string | null = null;
  let firmwareRevision: string | null = null;

  const controllers = /^nvme\d+n\d+$/.test(name) ? await nvmeControllersOf(realDir) : null;
  const scsiInfo = ctx.scsi.get(name);
  if (controllers !== null && controllers.length > 0) {
    transport = 'nvme';
    // `device` is the controller (or the subsystem head, which carries the same identity attributes).
    model = await readAttr(join(realDir, 'device', 'model'));
    serial = await readAttr(join(realDir, 'device', 'serial'));
    firmwareRevision = await readAttr(join(realDir, 'device', 'firmware_rev'));
    wwid = await readAttr(join(realDir, 'wwid'));
    nvme = {
      controller: controllers[0] as string,
      controllers,
      nsid: (await readInt(join(realDir, 'nsid'))) ?? 0,
      metadataBytes: await readInt(join(realDir, 'metadata_bytes')),
      commandSetId: await readInt(join(realDir, 'csi')),
    };
  } else if (scsiInfo !== undefined) {
    // libata presents SATA disks as SCSI with the vendor field set to "ATA".
    const protocol = scsiInfo.vendor === 'ATA' ? 'sata' : 'sas';
    transport = protocol;
    vendor = scsiInfo.vendor;
    model = scsiInfo.model;
    serial = scsiInfo.serial;
    wwid = scsiInfo.wwid;
    firmwareRevision = scsiInfo.revision;
    scsi = { hctl: scsiInfo.hctl, protocol, scsiType: scsiInfo.scsiType };
  } else {
    if (driver === 'virtio_blk') transport = 'virtio';
    // virtio_blk exposes the serial on the disk itself; others under device/.
    serial = (await readAttr(join(realDir, 'serial'))) ?? (await readAttr(join(realDir, 'device', 'serial')));
    model = await readAttr(join(realDir, 'device', 'model'));
    wwid = (await readAttr(join(realDir, 'wwid'))) ?? (await readAttr(join(realDir, 'device', 'wwid')));
  }

  return {
    name,
    devicePath: join(ctx.devRoot, uevent.get('DEVNAME') ?? name),
    sysfsPath: relativeTo(ctx.realSysRoot, realDir),
    majorMinor: await readAttr(join(realDir, 'dev')),
    transport,
    driver,
    capacityBytes: sizeSectors * SECTOR_BYTES,
    rotational: (await readInt(join(realDir, 'queue', 'rotational'))) === 1,
    logicalBlockSizeBytes: (await readInt(join(realDir, 'queue', 'logical_block_size'))) ?? SECTOR_BYTES,
    physicalBlockSizeBytes: (await readInt(join(realDir, 'queue', 'physical_block_size'))) ?? SECTOR_BYTES,
    zoned,
    zoneCount: zoned === 'none' ? null : await readInt(join(realDir, 'queue', 'nr_zones')),
    zoneSizeBytes: zoned === 'none' || chunkSectors === null ? null : chunkSectors * SECTOR_BYTES,
    removable: (await readInt(join(realDir, 'removable'))) === 1,
    readOnly: (await readInt(join(realDir, 'ro'))) === 1,
    vendor,
    model,
    serial,
    wwid,
    firmwareRevision,
    nvme,
    scsi,
  };
}

/** Why a block device is not a pool candidate, or null when it is one. */
async function skipReason(name: string, realDir: string): Promise<string | null> {
  if (await exists(join(realDir, 'partition'))) return 'partition';
  for (const [prefix, reason] of SKIPPED_PREFIXES) if (name.startsWith(prefix)) return reason;
  // Per-path NVMe multipath devices (nvme0c0n1): hidden, no /dev node; the head disk is reported instead.
  if ((await readInt(join(realDir, 'hidden'))) === 1) return 'hidden multipath path device';
  if (((await readInt(join(realDir, 'size'))) ?? 0) === 0) return 'zero size (no medium)';
  return null;
}

export async function scanHardware(options: ScanOptions = {}): Promise<HardwareReport> {
  const sysRoot = options.sysRoot ?? '/sys';
  const devRoot = options.devRoot ?? '/dev';
  const runSmart = options.runSmart ?? true;

  const classBlock = join(sysRoot, 'class', 'block');
  const blockNames = await listDir(classBlock);
  const realSysRoot = await resolve(sysRoot);
  if (blockNames === null || realSysRoot === null) {
    throw new HardwareScanError(`no sysfs block class at ${classBlock}: is ${sysRoot} a mounted sysfs?`);
  }

  const scsi = await readScsiDisks(sysRoot);
  const controllerDrafts = await readNvmeControllers(sysRoot, devRoot, realSysRoot);

  const drafts: DiskDraft[] = [];
  const skipped: SkippedBlockDevice[] = [];
  for (const name of blockNames) {
    const realDir = await resolve(join(classBlock, name));
    if (realDir === null) {
      skipped.push({ name, reason: 'dangling sysfs link' });
      continue;
    }
    const reason = await skipReason(name, realDir);
    if (reason !== null) {
      skipped.push({ name, reason });
      continue;
    }
    drafts.push(await readDisk(name, realDir, { devRoot, realSysRoot, scsi }));
  }

  const searchPath = options.toolSearchPath ?? defaultToolSearchPath();
  const tools = {
    smartctl: await findTool('smartctl', searchPath),
    nvme: await findTool('nvme', searchPath),
  };

  const controllerSmart = await mapBounded(controllerDrafts, SMART_CONCURRENCY, async (c): Promise<SmartReport> => {
    if (!runSmart) return { available: false, state: 'skipped', reason: 'SMART not requested' };
    if (tools.nvme !== null) return nvmeSmartLogReport(tools.nvme, c.devicePath);
    // smartctl reads NVMe health too; use it when nvme-cli is missing.
    if (tools.smartctl !== null) return smartctlReport(tools.smartctl, c.devicePath);
    return { available: false, state: 'unavailable', reason: 'nvme-cli and smartctl not installed' };
  });
  const smartByController = new Map(controllerDrafts.map((c, i) => [c.name, controllerSmart[i] as SmartReport]));

  const diskSmart = await mapBounded(drafts, SMART_CONCURRENCY, async (d): Promise<SmartReport> => {
    if (!runSmart) return { available: false, state: 'skipped', reason: 'SMART not requested' };
    if (d.nvme !== null) {
      // NVMe health is per controller: the namespace shares its controller's log.
      return smartByController.get(d.nvme.controller) ?? { available: false, state: 'unavailable', reason: `controller ${d.nvme.controller} not in sysfs class nvme` };
    }
    if (tools.smartctl === null) return { available: false, state: 'unavailable', reason: 'smartctl not installed' };
    return smartctlReport(tools.smartctl, d.devicePath);
  });

  const disks: DiskInfo[] = drafts.map((d, i) => {
    const { tier, reason } = suggestTier(d);
    return { ...d, smart: diskSmart[i] as SmartReport, suggestedTier: tier, tierReason: reason };
  });

  const nvmeControllers: NvmeControllerInfo[] = controllerDrafts.map((c) => ({
    ...c,
    namespaces: disks
      .filter((d) => d.nvme?.controllers.includes(c.name) === true)
      .sort((a, b) => (a.nvme?.nsid ?? 0) - (b.nvme?.nsid ?? 0))
      .map((d) => ({
        name: d.name,
        nsid: d.nvme?.nsid ?? 0,
        capacityBytes: d.capacityBytes,
        logicalBlockSizeBytes: d.logicalBlockSizeBytes,
        metadataBytes: d.nvme?.metadataBytes ?? null,
        lbaFormat: `${d.logicalBlockSizeBytes} + ${d.nvme?.metadataBytes ?? 0}`,
        zoned: d.zoned === 'host-managed',
        zonedModel: d.zoned,
        suggestedTier: d.suggestedTier,
      })),
    smart: smartByController.get(c.name) as SmartReport,
  }));

  disks.sort((a, b) => compareNatural(a.name, b.name));
  return { scannedAt: new Date().toISOString(), sysRoot, devRoot, tools, disks, nvmeControllers, skipped };
}
