// SMART readings through the system's own tools (smartctl, nvme-cli): finds
// them, runs them with a time and output bound, and reads their JSON. Absence
// and failure are outcomes to report, never exceptions.

import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import type { SmartHealth, SmartReport, SmartTool } from './types.js';

/** A spun-down HDD can take ~15 s to answer; past this the device is reported as failed. */
export const SMART_TIMEOUT_MS = 30_000;
/** smartctl -a JSON is a few tens of KiB; the bound stops a runaway tool from filling memory. */
export const SMART_MAX_OUTPUT_BYTES = 8 * 1024 * 1024;

export function defaultToolSearchPath(): string {
  const fromEnv = process.env['PATH'] ?? '';
  return [fromEnv, '/usr/local/sbin', '/usr/sbin', '/sbin'].filter((p) => p.length > 0).join(':');
}

/** First executable named `name` in the ':'-separated directory list, or null. */
export async function findTool(name: string, searchPath: string): Promise<string | null> {
  for (const dir of searchPath.split(':')) {
    if (dir.length === 0) continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return null;
}

interface ExecResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  /** Set when the process could not run to completion (spawn error, timeout, output bound). */
  runError: string | null;
}

function run(file: string, args: string[]): Promise<ExecResult> {
  return new Promise((resolvePromise) => {
    execFile(
      file,
      args,
      { timeout: SMART_TIMEOUT_MS, maxBuffer: SMART_MAX_OUTPUT_BYTES, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        if (err === null) {
          resolvePromise({ exitCode: 0, stdout, stderr, runError: null });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean; signal?: string | null };
        if (typeof e.code === 'number') {
          resolvePromise({ exitCode: e.code, stdout, stderr, runError: null });
        } else if (e.killed === true || e.signal) {
          resolvePromise({ exitCode: null, stdout, stderr, runError: `killed by ${e.signal ?? 'signal'} after ${SMART_TIMEOUT_MS} ms` });
        } else {
          resolvePromise({ exitCode: null, stdout, stderr, runError: e.message });
        }
      },
    );
  });
}

function firstLine(text: string): string {
  return text.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
}

function toNumber(value: unknown): number | null {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'string' && /^-?\d+(\.\d+)?$/.test(value.trim())) return Number(value);
  return null;
}

function toStr(value: unknown): string | null {
  return typeof value === 'string' && value.trim().length > 0 ? value.trim() : null;
}

function obj(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

/** Reads the fields we report from `smartctl --json -a` output (ATA, SCSI or NVMe device). */
export function parseSmartctlJson(doc: unknown): SmartHealth {
  const root = obj(doc);
  const nvmeLog = obj(root['nvme_smart_health_information_log']);
  const hasNvmeLog = Object.keys(nvmeLog).length > 0;
  const status = obj(root['smart_status']);
  const passed = typeof status['passed'] === 'boolean' ? status['passed'] : null;

  let mediaErrors: number | null = null;
  if (hasNvmeLog) {
    mediaErrors = toNumber(nvmeLog['media_errors']);
  } else {
    // ATA: attribute 187 (Reported_Uncorrect) counts errors the drive could not
    // recover, the closest match to NVMe's media_errors.
    const table = obj(root['ata_smart_attributes'])['table'];
    if (Array.isArray(table)) {
      const attr = table.map(obj).find((a) => a['id'] === 187);
      if (attr !== undefined) mediaErrors = toNumber(obj(attr['raw'])['value']);
    }
    // SCSI: uncorrected read + write errors from the error counter log.
    const log = obj(root['scsi_error_counter_log']);
    const readErr = toNumber(obj(log['read'])['total_uncorrected_errors']);
    const writeErr = toNumber(obj(log['write'])['total_uncorrected_errors']);
    if (readErr !== null || writeErr !== null) mediaErrors = (readErr ?? 0) + (writeErr ?? 0);
  }

  return {
    healthPassed: passed,
    temperatureCelsius: toNumber(obj(root['temperature'])['current']) ?? (hasNvmeLog ? toNumber(nvmeLog['temperature']) : null),
    powerOnHours: toNumber(obj(root['power_on_time'])['hours']) ?? (hasNvmeLog ? toNumber(nvmeLog['power_on_hours']) : null),
    percentageUsed: hasNvmeLog ? toNumber(nvmeLog['percentage_used']) : null,
    mediaErrors,
    criticalWarning: hasNvmeLog ? toNumber(nvmeLog['critical_warning']) : null,
    modelName: toStr(root['model_name']) ?? toStr(root['scsi_model_name']),
    serialNumber: toStr(root['serial_number']),
    firmwareVersion: toStr(root['firmware_version']) ?? toStr(root['scsi_revision']),
  };
}

/**
 * Reads `nvme smart-log -o json` output. nvme-cli reports temperature in
 * kelvin; newer versions wrap critical_warning in an object.
 */
export function parseNvmeSmartLogJson(doc: unknown): SmartHealth {
  const root = obj(doc);
  const cwRaw = root['critical_warning'];
  const criticalWarning = toNumber(cwRaw) ?? toNumber(obj(cwRaw)['value']);
  const kelvin = toNumber(root['temperature']);
  return {
    healthPassed: criticalWarning === null ? null : criticalWarning === 0,
    temperatureCelsius: kelvin === null ? null : Math.round(kelvin - 273.15),
    powerOnHours: toNumber(root['power_on_hours']),
    percentageUsed: toNumber(root['percent_used']) ?? toNumber(root['percentage_used']),
    mediaErrors: toNumber(root['media_errors']),
    criticalWarning,
    modelName: null,
    serialNumber: null,
    firmwareVersion: null,
  };
}

function failed(tool: SmartTool, command: string, reason: string): SmartReport {
  return { available: false, state: 'failed', tool, command, reason };
}

// smartctl's exit status is a bit mask: bit 0 = bad command line, bit 1 =
// device open failed; bits 2-7 report on the disk and still come with output.
const SMARTCTL_FATAL_BITS = 0b11;

export async function smartctlReport(smartctl: string, devicePath: string): Promise<SmartReport> {
  const args = ['--json', '-a', devicePath];
  const command = `smartctl ${args.join(' ')}`;
  const res = await run(smartctl, args);
  if (res.runError !== null) return failed('smartctl', command, res.runError);
  let doc: unknown;
  try {
    doc = JSON.parse(res.stdout);
  } catch {
    return failed('smartctl', command, `exit status ${res.exitCode}: ${firstLine(res.stderr || res.stdout) || 'output is not JSON'}`);
  }
  if (res.exitCode === null || (res.exitCode & SMARTCTL_FATAL_BITS) !== 0) {
    const messages = obj(obj(doc)['smartctl'])['messages'];
    const errors = Array.isArray(messages)
      ? messages.map(obj).filter((m) => m['severity'] === 'error').map((m) => String(m['string']))
      : [];
    return failed('smartctl', command, `exit status ${res.exitCode}: ${errors.join('; ') || firstLine(res.stderr) || 'device not readable'}`);
  }
  return { available: true, state: 'ok', tool: 'smartctl', command, ...parseSmartctlJson(doc) };
}

export async function nvmeSmartLogReport(nvme: string, controllerPath: string): Promise<SmartReport> {
  const args = ['smart-log', '-o', 'json', controllerPath];
  const command = `nvme ${args.join(' ')}`;
  const res = await run(nvme, args);
  if (res.runError !== null) return failed('nvme', command, res.runError);
  if (res.exitCode !== 0) {
    // nvme-cli prints the error on stderr and its usage text on stdout.
    return failed('nvme', command, `exit status ${res.exitCode}: ${firstLine(res.stderr) || firstLine(res.stdout)}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(res.stdout);
  } catch {
    return failed('nvme', command, 'output is not JSON');
  }
  return { available: true, state: 'ok', tool: 'nvme', command, ...parseNvmeSmartLogJson(doc) };
}
