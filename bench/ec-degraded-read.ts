// Degraded-read throughput of a 4+2 cold volume beside healthy-read
// throughput of the same volume, same client, same run: nbdcopy reads the
// whole export (256 MiB of destaged stripes) to null: with one cold pool
// directory present (healthy) or moved away (lost: every stripe whose data
// shard was there is decoded from parity). Runs alternate healthy/degraded,
// REPEATS each, and print medians and the ratio (target degraded >= 0.7x).
// Run by hand: `npx tsc -p tsconfig.json && node dist/bench/ec-degraded-read.js`
// (VOLUME_MIB=64 for a quicker run). About a minute on this 2-core machine.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLIENT_ENV } from '../test/helpers/daemon.js';
import { MiB, coldPoolDir, coldStatus, dropCache, fillColdVolume, startColdDaemon } from '../test/helpers/cold.js';

const VOLUME_MIB = Number(process.env.VOLUME_MIB ?? 256);
const REPEATS = 3;
const LOST_POOL = 2;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** CPU seconds (user + system) a process has used so far, from /proc (clock ticks of 1/100 s on Linux). */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * One sequential whole-export read: MB/s (1e6 bytes) of volume data, and MB
 * per daemon CPU-second (steadier than wall time when others load the box).
 */
function nbdcopyRead(uri: string, daemonPid: number): { mbps: number; mbPerCpuS: number } {
  const cpu0 = cpuSeconds(daemonPid);
  const start = process.hrtime.bigint();
  const r = spawnSync('nbdcopy', [uri, 'null:'], { env: CLIENT_ENV, encoding: 'utf8' });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0) throw new Error(`nbdcopy failed: ${r.stderr}`);
  const cpu = cpuSeconds(daemonPid) - cpu0;
  return { mbps: (VOLUME_MIB * MiB) / seconds / 1e6, mbPerCpuS: (VOLUME_MIB * MiB) / cpu / 1e6 };
}

const d = await startColdDaemon();
const away = `${coldPoolDir(d, LOST_POOL)}.away`;
try {
  await fillColdVolume(d, 'bench', VOLUME_MIB, 1);
  const stripes = VOLUME_MIB; // fillColdVolume checked: one stripe per MiB

  const healthy: { mbps: number; mbPerCpuS: number }[] = [];
  const degraded: { mbps: number; mbPerCpuS: number }[] = [];
  const pid = d.proc.pid!;
  nbdcopyRead(d.exportUri('bench'), pid); // warm the page cache for both kinds of run
  for (let i = 0; i < REPEATS; i++) {
    // The read cache would serve repeat reads from RAM: both kinds of run read the shards.
    await dropCache(d);
    healthy.push(nbdcopyRead(d.exportUri('bench'), pid));
    // Moving the directory away (and back) loses and restores the pool without rewriting any shard.
    fs.renameSync(coldPoolDir(d, LOST_POOL), away);
    await dropCache(d);
    const before = (await coldStatus(d)).degradedReads;
    degraded.push(nbdcopyRead(d.exportUri('bench'), pid));
    const after = (await coldStatus(d)).degradedReads;
    if (after - before < stripes / 2) throw new Error(`only ${after - before} degraded reads: the pool loss did not take`);
    fs.renameSync(away, coldPoolDir(d, LOST_POOL));
  }
  const row = (label: string, runs: { mbps: number; mbPerCpuS: number }[]) => {
    const mbps = median(runs.map((r) => r.mbps));
    const cpu = median(runs.map((r) => r.mbPerCpuS));
    console.log(`  ${label.padEnd(32)} ${mbps.toFixed(1).padStart(8)} MB/s  ${cpu.toFixed(1).padStart(8)} MB/daemon-CPU-s   runs ${runs.map((r) => r.mbps.toFixed(1)).join(' ')}`);
    return { mbps, cpu };
  };
  console.log(`ec-degraded-read: ${VOLUME_MIB} MiB 4+2 cold volume, nbdcopy -> null:, median of ${REPEATS}`);
  const h = row('healthy read (all 6 pools)', healthy);
  const g = row(`degraded read (cold-${LOST_POOL} lost)`, degraded);
  console.log(`  ${'ratio degraded / healthy'.padEnd(32)} ${(g.mbps / h.mbps).toFixed(2).padStart(7)}x       ${(g.cpu / h.cpu).toFixed(2).padStart(7)}x   (target >= 0.70x)`);
  // Both figures share the machine; a busy machine moves them together but adds noise.
  console.log(`  load average during the run: ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);
} finally {
  if (fs.existsSync(away)) fs.renameSync(away, coldPoolDir(d, LOST_POOL));
  await d.cleanup();
}
