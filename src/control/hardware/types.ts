// Shapes of `couchestor hardware scan` output: what the scan found per disk and
// per NVMe controller, its SMART reading, and the tier it suggests.

import type { Tier } from '../../dataplane/meta/store.js';

export type { Tier };

/** How the disk is attached, as far as sysfs tells. */
export type DiskTransport = 'nvme' | 'sata' | 'sas' | 'virtio' | 'other';

/** The kernel's queue/zoned value. */
export type ZonedModel = 'none' | 'host-aware' | 'host-managed';

export type SmartTool = 'smartctl' | 'nvme';

/**
 * SMART outcome for one disk or controller. `available` is true only when a
 * tool ran and its output was read; every other case carries a reason.
 */
export type SmartReport =
  | { available: false; state: 'skipped'; reason: string }
  | { available: false; state: 'unavailable'; reason: string }
  | { available: false; state: 'failed'; tool: SmartTool; command: string; reason: string }
  | ({ available: true; state: 'ok'; tool: SmartTool; command: string } & SmartHealth);

export interface SmartHealth {
  /** Overall self-assessment; null when the device does not report one. */
  healthPassed: boolean | null;
  temperatureCelsius: number | null;
  powerOnHours: number | null;
  /** NVMe "percentage used" endurance estimate (0..255). */
  percentageUsed: number | null;
  mediaErrors: number | null;
  /** NVMe critical warning bit field; null for ATA/SCSI. */
  criticalWarning: number | null;
  /** Full model name as the device reports it (sysfs truncates ATA models to 16 chars). */
  modelName: string | null;
  serialNumber: string | null;
  firmwareVersion: string | null;
}

export interface NvmeNamespaceRef {
  /** Controller that owns the namespace (the first one for a multipath namespace). */
  controller: string;
  /** Every controller that reaches it (more than one only with NVMe multipath). */
  controllers: string[];
  nsid: number;
  /** Per-block metadata bytes of the active LBA format, when the kernel exposes it. */
  metadataBytes: number | null;
  /** Command set identifier: 0 NVM, 2 Zoned Namespace; null on kernels without `csi`. */
  commandSetId: number | null;
}

export interface ScsiRef {
  /** host:channel:target:lun */
  hctl: string;
  protocol: 'sata' | 'sas';
  /** SCSI peripheral device type (0 = direct access disk, 0x14 = host-managed zoned). */
  scsiType: number | null;
}

export interface DiskInfo {
  name: string;
  /** Node under the dev root, e.g. /dev/nvme0n1. */
  devicePath: string;
  /** Resolved location under the sysfs root, relative to it (e.g. devices/pci0000:00/.../block/sda). */
  sysfsPath: string;
  /** "major:minor" from the dev attribute. */
  majorMinor: string | null;
  transport: DiskTransport;
  /** Kernel driver bound to the parent device (nvme, sd, virtio_blk, ...), when there is one. */
  driver: string | null;
  capacityBytes: number;
  rotational: boolean;
  logicalBlockSizeBytes: number;
  physicalBlockSizeBytes: number;
  zoned: ZonedModel;
  zoneCount: number | null;
  zoneSizeBytes: number | null;
  removable: boolean;
  readOnly: boolean;
  vendor: string | null;
  model: string | null;
  serial: string | null;
  wwid: string | null;
  firmwareRevision: string | null;
  nvme: NvmeNamespaceRef | null;
  scsi: ScsiRef | null;
  smart: SmartReport;
  suggestedTier: Tier;
  tierReason: string;
}

export interface NvmeNamespaceInfo {
  name: string;
  nsid: number;
  capacityBytes: number;
  logicalBlockSizeBytes: number;
  metadataBytes: number | null;
  /** Active LBA format as nvme-cli prints it: "<data bytes> + <metadata bytes>". */
  lbaFormat: string;
  zoned: boolean;
  zonedModel: ZonedModel;
  suggestedTier: Tier;
}

export interface NvmeControllerInfo {
  name: string;
  devicePath: string;
  sysfsPath: string;
  model: string | null;
  serial: string | null;
  firmwareRevision: string | null;
  /** pcie, tcp, rdma, fc, loop */
  transport: string | null;
  /** PCI address for pcie, traddr=... for fabrics. */
  address: string | null;
  /** live, resetting, connecting, deleting, dead, ... */
  state: string | null;
  subsystemNqn: string | null;
  namespaces: NvmeNamespaceInfo[];
  smart: SmartReport;
}

export interface SkippedBlockDevice {
  name: string;
  reason: string;
}

export interface HardwareReport {
  scannedAt: string;
  sysRoot: string;
  devRoot: string;
  /** Resolved paths of the SMART tools, null when not installed. */
  tools: { smartctl: string | null; nvme: string | null };
  disks: DiskInfo[];
  nvmeControllers: NvmeControllerInfo[];
  skipped: SkippedBlockDevice[];
}

export interface ScanOptions {
  sysRoot?: string;
  devRoot?: string;
  runSmart?: boolean;
  /**
   * Directories searched for smartctl and nvme, ':'-separated. Defaults to
   * $PATH plus the sbin directories, where distributions install both tools
   * even though a non-root $PATH often lacks them.
   */
  toolSearchPath?: string;
}

/** The scan could not read the sysfs tree at all (wrong root, not Linux). */
export class HardwareScanError extends Error {
  override name = 'HardwareScanError';
}
