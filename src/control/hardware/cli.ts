// `couchestor hardware scan [--json] [--sys-root DIR] [--no-smart]`: argument
// parsing and output for the hardware scan; the CLI dispatcher calls this.

import { scanHardware } from './scan.js';
import { formatHardwareTable } from './table.js';
import { HardwareScanError } from './types.js';

export const HARDWARE_SCAN_USAGE = `usage: couchestor hardware scan [--json] [--sys-root DIR] [--no-smart]

  --json          print the report as JSON instead of a table
  --sys-root DIR  read sysfs from DIR instead of /sys
  --no-smart      do not run smartctl / nvme smart-log
`;

/** Where the command writes; process.stdout / process.stderr by default. */
export interface CliOutput {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

/** Exit codes: 0 report printed, 1 scan failed, 2 bad arguments. */
export async function runHardwareScanCli(
  argv: string[],
  output: CliOutput = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  let json = false;
  let runSmart = true;
  let sysRoot = '/sys';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--json') json = true;
    else if (arg === '--no-smart') runSmart = false;
    else if (arg === '--sys-root' || arg.startsWith('--sys-root=')) {
      const value = arg === '--sys-root' ? argv[++i] : arg.slice('--sys-root='.length);
      if (value === undefined || value.length === 0) {
        output.stderr.write(`--sys-root needs a directory\n${HARDWARE_SCAN_USAGE}`);
        return 2;
      }
      sysRoot = value;
    } else if (arg === '-h' || arg === '--help') {
      output.stdout.write(HARDWARE_SCAN_USAGE);
      return 0;
    } else {
      output.stderr.write(`unknown argument: ${arg}\n${HARDWARE_SCAN_USAGE}`);
      return 2;
    }
  }

  try {
    const report = await scanHardware({ sysRoot, runSmart });
    output.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : formatHardwareTable(report));
    return 0;
  } catch (err) {
    if (err instanceof HardwareScanError) {
      output.stderr.write(`hardware scan: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
