// Public API of hardware discovery (`couchestor hardware scan`).

export { scanHardware } from './scan.js';
export { formatHardwareTable, formatBytesIec } from './table.js';
export { runHardwareScanCli, HARDWARE_SCAN_USAGE, type CliOutput } from './cli.js';
export { parseSmartctlJson, parseNvmeSmartLogJson } from './smart.js';
export * from './types.js';
