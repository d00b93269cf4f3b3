// Human-readable rendering of a HardwareReport for `couchestor hardware scan`.

import type { HardwareReport, SmartReport } from './types.js';

const IEC_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

export function formatBytesIec(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < IEC_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} B`;
  return `${value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)} ${IEC_UNITS[unit]}`;
}

function smartCell(smart: SmartReport): string {
  switch (smart.state) {
    case 'ok': {
      const verdict = smart.healthPassed === null ? 'ok' : smart.healthPassed ? 'PASSED' : 'FAILED';
      return smart.temperatureCelsius === null ? verdict : `${verdict} ${smart.temperatureCelsius}C`;
    }
    case 'failed':
      return 'error';
    case 'unavailable':
      return 'n/a';
    case 'skipped':
      return '-';
  }
}

function renderTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function formatHardwareTable(report: HardwareReport): string {
  const out: string[] = [];
  if (report.disks.length === 0) {
    out.push(`no disks found under ${report.sysRoot}`);
  } else {
    out.push(
      renderTable(
        ['DISK', 'TRANSPORT', 'CAPACITY', 'LBS/PBS', 'ROT', 'ZONED', 'MODEL', 'SERIAL', 'SMART', 'TIER', 'REASON'],
        report.disks.map((d) => [
          d.name,
          d.transport,
          formatBytesIec(d.capacityBytes),
          `${d.logicalBlockSizeBytes}/${d.physicalBlockSizeBytes}`,
          d.rotational ? 'yes' : 'no',
          d.zoned,
          d.model ?? '-',
          d.serial ?? '-',
          smartCell(d.smart),
          d.suggestedTier,
          d.tierReason,
        ]),
      ),
    );
  }

  if (report.nvmeControllers.length > 0) {
    out.push('');
    out.push(
      renderTable(
        ['CONTROLLER', 'TRANSPORT', 'ADDRESS', 'STATE', 'MODEL', 'SERIAL', 'FIRMWARE', 'SMART', 'NAMESPACES'],
        report.nvmeControllers.map((c) => [
          c.name,
          c.transport ?? '-',
          c.address ?? '-',
          c.state ?? '-',
          c.model ?? '-',
          c.serial ?? '-',
          c.firmwareRevision ?? '-',
          smartCell(c.smart),
          c.namespaces
            .map((n) => `${n.name} (nsid ${n.nsid}, ${formatBytesIec(n.capacityBytes)}, LBA ${n.lbaFormat}${n.zoned ? ', zoned' : ''})`)
            .join('; ') || '-',
        ]),
      ),
    );
  }

  // SMART problems are spelled out once per device so the table cells stay short.
  const notes: string[] = [];
  const seen = new Set<string>();
  for (const c of report.nvmeControllers) {
    if (c.smart.state === 'failed' || c.smart.state === 'unavailable') {
      notes.push(`  ${c.name}: ${c.smart.reason}`);
      seen.add(c.name);
    }
  }
  for (const d of report.disks) {
    if (d.nvme !== null && seen.has(d.nvme.controller)) continue;
    if (d.smart.state === 'failed' || d.smart.state === 'unavailable') notes.push(`  ${d.name}: ${d.smart.reason}`);
  }
  if (notes.length > 0) out.push('', 'SMART:', ...notes);

  if (report.skipped.length > 0) {
    out.push('', `skipped: ${report.skipped.map((s) => `${s.name} (${s.reason})`).join(', ')}`);
  }
  return out.join('\n') + '\n';
}
