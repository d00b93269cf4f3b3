#!/usr/bin/env bash
# Sustained small writes to a COLD volume over NBD, charged with all the work
# they cause: a filled cold export takes RUNTIME seconds of one fio job, then
# its journal is drained (`couchestor destage`); prints fio's IOPS, nbdkit's
# on the same job right after (the named peer, same filesystem), and the
# daemon's CPU seconds and bytes written (/proc/PID/stat, /proc/PID/io)
# during the run and during the drain, and the stripes each wrote. The short
# rows of nbd-vs-nbdkit.sh cannot show destaging cost fairly (work deferred
# past a 2 s run is free there); bytes written per client MiB here can.
#
#   bash bench/cold-write-cost.sh "--rw=randwrite --bs=4k --iodepth=1 --fsync=1" 15
#   DIST=.me-dist bash bench/cold-write-cost.sh "--rw=randwrite --bs=4k --iodepth=32" 15
# A run takes about RUNTIME + 40 s (fill, destage, drain, the nbdkit run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/bin:$PATH"
DIST=${DIST:-dist}; JOB=$1; RUNTIME=${2:-15}; SZ=${SIZE_MIB:-256}
W=$(mktemp -d /tmp/cold-write-cost-XXXXXX); mkdir -p $W/data

{ echo "pools:"; echo "  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }"
  for i in 0 1 2 3 4 5; do echo "  - { name: cold-$i, tier: cold, path: pools/cold-$i, capacity: auto }"; done
  echo "demoVolume: null"; } > $W/data/couchestor.yaml
node $DIST/src/cli.js serve --data-dir $W/data --nbd-port 0 --api-port 0 --metrics-port 0 --s3-port 0 > $W/out 2> $W/err &
PID=$!
NK=""
trap 'kill -INT $PID 2>/dev/null; [ -n "$NK" ] && kill $NK 2>/dev/null; wait 2>/dev/null; rm -rf $W' EXIT
for _ in $(seq 100); do grep -q '^couchestor ready' $W/out 2>/dev/null && break; sleep 0.1; done
SOCK=$(node -e 'console.log(JSON.parse(process.argv[1]).nbd.socketPath)' "$(grep '^couchestor ready' $W/out | sed 's/^couchestor ready //')")
node $DIST/src/cli.js volumes create c "${SZ}M" --tier cold --data-dir $W/data >/dev/null
truncate -s ${SZ}M $W/nk.img
nbdkit -f -U $W/nk.sock file $W/nk.img & NK=$!
head -c $((SZ*1048576)) /dev/urandom > $W/fill.img
nbdcopy --flush $W/fill.img "nbd+unix:///c?socket=$SOCK"
for _ in $(seq 100); do [ -S $W/nk.sock ] && break; sleep 0.1; done
nbdcopy --flush $W/fill.img "nbd+unix:///?socket=$W/nk.sock"; rm $W/fill.img
node $DIST/src/cli.js destage --data-dir $W/data >/dev/null
# CPU ticks (utime + stime, 100 a second), bytes the daemon caused to be written (write_bytes) and
# bytes it passed to write calls (wchar). write_bytes counts page-cache folios as they are dirtied,
# whole: on a kernel with large folios (ext4 from 6.16, here 6.18) a 4 KiB write + fdatasync into a
# page cached as a 2 MiB folio counts 2 MiB while the disk gets ~8 KiB (journal files recycled after
# the fill's 1 MiB records), so it overstates disk writes many times at a flush per write (qd1 run:
# 6.6 GiB write_bytes, 1.3 GiB wchar): wchar is the daemon's own figure (docs/cold-writes.md).
snap() { echo "$(awk '{print $14+$15}' /proc/$PID/stat) $(awk '/^write_bytes/{print $2}' /proc/$PID/io) $(awk '/^wchar/{print $2}' /proc/$PID/io)"; }
stripes() { node $DIST/src/cli.js cold --json --data-dir $W/data 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).stripesWritten))'; }
runfio() { fio --name=j --ioengine=nbd --uri="$1" $JOB --size=${SZ}M --runtime=$RUNTIME --time_based --randrepeat=0 --norandommap --output-format=json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s.slice(s.indexOf("{"))).jobs[0];console.log(j.write.iops.toFixed(0), (j.write.io_bytes/1048576).toFixed(0))})'; }
S0=$(stripes); A=$(snap)
R=$(runfio "nbd+unix:///c?socket=$SOCK")
B=$(snap); S1=$(stripes)
node $DIST/src/cli.js destage --data-dir $W/data >/dev/null
C=$(snap); S2=$(stripes)
NKR=$(runfio "nbd+unix:///?socket=$W/nk.sock")
node -e '
const [a,b,c]=[process.argv[1],process.argv[2],process.argv[3]].map(s=>s.split(" ").map(Number));
const [r, nk] = [process.argv[4].split(" "), process.argv[5].split(" ")];
const tck=100;
console.log(`iops ${r[0]} (${r[1]} MiB)  nbdkit ${nk[0]}  ratio ${(r[0]/nk[0]).toFixed(2)} | run: cpu ${((b[0]-a[0])/tck).toFixed(1)} s, written ${((b[1]-a[1])/1048576).toFixed(0)} MiB, stripes ${process.argv[7]-process.argv[6]} | drain: cpu ${((c[0]-b[0])/tck).toFixed(1)} s, written ${((c[1]-b[1])/1048576).toFixed(0)} MiB, stripes ${process.argv[8]-process.argv[7]} | written per client MiB ${((c[1]-a[1])/1048576/r[1]).toFixed(1)} (write calls ${((c[2]-a[2])/1048576/r[1]).toFixed(1)}), cpu s per client MiB ${((c[0]-a[0])/tck/r[1]).toFixed(3)} | load ${require("fs").readFileSync("/proc/loadavg","utf8").split(" ").slice(0,3).join(" ")}`);
' "$A" "$B" "$C" "$R" "$NKR" "$S0" "$S1" "$S2"
