#!/usr/bin/env bash
# NBD data path: couchestor vs `nbdkit file` (the named peer) in the same run,
# same fio jobs (ioengine=nbd), same kind of backing file (sparse, same size,
# same filesystem, pre-filled identically), over a Unix socket and TCP.
# Prints, per job and transport, the median of REPS runs and the ratio.
#
#   bash bench/nbd-vs-nbdkit.sh            # quick: 2 s per run (~6 minutes)
#   RUNTIME=10 bash bench/nbd-vs-nbdkit.sh # the issue's 10 s runs (~25 minutes)
#   ONLY="write-1m-qd8" bash bench/nbd-vs-nbdkit.sh   # a subset of the jobs
#   RAW=/tmp/runs.txt bash bench/nbd-vs-nbdkit.sh     # also keep every run's figures
#   TRANSPORTS=unix ONLY="cold-randwrite-4k-qd1-fsync1" bash bench/nbd-vs-nbdkit.sh
#   DIST=.me-dist bash bench/nbd-vs-nbdkit.sh          # a private build directory
#
# Jobs named cold-* run against a second export of the same size on the cold
# tier (writes go to the journal; filled like the first, then destaged), and
# start with an empty journal: each run waits for the previous one's journal
# to be destaged (`couchestor destage`) outside its timing, on both servers'
# turns, so no run is charged the previous one's destaging. Destaging during
# a run is charged to it. -fsyncN: a FLUSH after every N writes (fio --fsync).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${RUNTIME:-2}          # seconds per fio run (time_based)
REPS=${REPS:-3}                # repetitions; the median is reported
SIZE_MIB=${SIZE_MIB:-512}      # export size
WORK=${WORK:-/tmp/nbd-work/bench}
DIST=${DIST:-dist}
read -r -a TRS <<< "${TRANSPORTS:-unix tcp}"
export PATH="/usr/bin:/bin:$PATH"   # Debian's python3 / libnbd, not pyenv's

command -v fio >/dev/null && command -v nbdkit >/dev/null && command -v nbdcopy >/dev/null || {
  echo "needs fio, nbdkit and nbdcopy (apt-get install fio nbdkit libnbd-bin)" >&2; exit 1; }

source bench/common.sh   # builds DIST, an empty $WORK, PIDS killed and $WORK removed on exit

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# --- couchestor: one hot pool in $WORK, no demo volume ----------------------
DATA="$WORK/couchestor"
mkdir -p "$DATA"
{
  echo "pools:"
  echo "  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }"
  for i in 0 1 2 3 4 5; do echo "  - { name: cold-$i, tier: cold, path: pools/cold-$i, capacity: auto }"; done
  echo "demoVolume: null"
} > "$DATA/couchestor.yaml"
node "$DIST/src/cli.js" serve --data-dir "$DATA" --nbd-port 0 --api-port 0 --metrics-port 0 --s3-port 0 \
  > "$WORK/couchestor.out" 2> "$WORK/couchestor.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^couchestor ready' "$WORK/couchestor.out" 2>/dev/null && break; sleep 0.1; done
READY=$(grep '^couchestor ready' "$WORK/couchestor.out" | sed 's/^couchestor ready //')
[ -n "$READY" ] || { cat "$WORK/couchestor.err" >&2; exit 1; }
CS_PORT=$(node -e 'console.log(JSON.parse(process.argv[1]).nbd.port)' "$READY")
CS_SOCK=$(node -e 'console.log(JSON.parse(process.argv[1]).nbd.socketPath)' "$READY")
node "$DIST/src/cli.js" volumes create bench "${SIZE_MIB}M" --data-dir "$DATA" >/dev/null

read -r -a JOBS <<< "${ONLY:-randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd1 randwrite-4k-qd32 read-1m-qd8 write-1m-qd8 randwrite-4k-qd1-fsync1 randwrite-4k-qd32-fsync8 cold-randwrite-4k-qd1-fsync1 cold-randwrite-4k-qd32-fsync8 cold-randwrite-4k-qd32}"
COLD=0
for job in "${JOBS[@]}"; do case "$job" in cold-*) COLD=1 ;; esac; done
[ "$COLD" = 1 ] && node "$DIST/src/cli.js" volumes create bench-cold "${SIZE_MIB}M" --tier cold --data-dir "$DATA" >/dev/null

# --- nbdkit file: a sparse file of the same size on the same filesystem -------
NK_IMG="$WORK/nbdkit.img"
truncate -s "${SIZE_MIB}M" "$NK_IMG"
NK_PORT=$(free_port)
NK_SOCK="$WORK/nbdkit.sock"
nbdkit -f -i 127.0.0.1 -p "$NK_PORT" file "$NK_IMG" & PIDS+=($!)
nbdkit -f -U "$NK_SOCK" file "$NK_IMG" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$NK_SOCK" ] && break; sleep 0.1; done

declare -A URI
URI[couchestor,tcp]="nbd://127.0.0.1:$CS_PORT/bench"
URI[couchestor,unix]="nbd+unix:///bench?socket=$CS_SOCK"
URI[couchestor-cold,tcp]="nbd://127.0.0.1:$CS_PORT/bench-cold"
URI[couchestor-cold,unix]="nbd+unix:///bench-cold?socket=$CS_SOCK"
URI[nbdkit,tcp]="nbd://127.0.0.1:$NK_PORT/"
URI[nbdkit,unix]="nbd+unix:///?socket=$NK_SOCK"

# Identical contents on both, so reads hit data rather than holes.
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/fill.img"
nbdcopy --flush "$WORK/fill.img" "${URI[couchestor,unix]}"
nbdcopy --flush "$WORK/fill.img" "${URI[nbdkit,unix]}"
if [ "$COLD" = 1 ]; then
  nbdcopy --flush "$WORK/fill.img" "${URI[couchestor-cold,unix]}"
  node "$DIST/src/cli.js" destage --data-dir "$DATA" >/dev/null
fi
rm -f "$WORK/fill.img"

# job name -> fio arguments
# ONLY="randread-4k-qd1 write-1m-qd8" runs a subset (e.g. while iterating on one path).
declare -A ARGS
ARGS[randread-4k-qd1]="--rw=randread --bs=4k --iodepth=1"
ARGS[randread-4k-qd32]="--rw=randread --bs=4k --iodepth=32"
ARGS[randwrite-4k-qd1]="--rw=randwrite --bs=4k --iodepth=1"
ARGS[randwrite-4k-qd32]="--rw=randwrite --bs=4k --iodepth=32"
ARGS[read-1m-qd8]="--rw=read --bs=1m --iodepth=8"
ARGS[write-1m-qd8]="--rw=write --bs=1m --iodepth=8"
ARGS[randwrite-4k-qd1-fsync1]="--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
ARGS[randwrite-4k-qd32-fsync8]="--rw=randwrite --bs=4k --iodepth=32 --fsync=8"
for j in randwrite-4k-qd1-fsync1 randwrite-4k-qd32-fsync8 randwrite-4k-qd32; do ARGS[cold-$j]=${ARGS[$j]}; done

RESULTS="$WORK/results.txt"
: > "$RESULTS"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  runtime ${RUNTIME}s x ${REPS} reps, ${SIZE_MIB} MiB export" >&2
# Interleaved (rep, job, transport, server) so both servers see the same background load.
for rep in $(seq "$REPS"); do
  for job in "${JOBS[@]}"; do
    for tr in "${TRS[@]}"; do
      for srv in couchestor nbdkit; do
        uri=${URI[$srv,$tr]}
        case "$job" in cold-*)
          node "$DIST/src/cli.js" destage --data-dir "$DATA" >/dev/null
          [ "$srv" = couchestor ] && uri=${URI[couchestor-cold,$tr]} ;;
        esac
        # shellcheck disable=SC2086
        out=$(fio --name="$job" --ioengine=nbd --uri="$uri" ${ARGS[$job]} \
          --size="${SIZE_MIB}M" --runtime="$RUNTIME" --time_based --ramp_time=0 \
          --randrepeat=0 --norandommap --output-format=json 2>/dev/null)
        node -e '
          const j = JSON.parse(process.argv[1].slice(process.argv[1].indexOf("{"))).jobs[0];
          const d = j.read.io_bytes > 0 ? j.read : j.write;
          console.log([process.argv[2], process.argv[3], process.argv[4], d.iops.toFixed(0), (d.bw_bytes / 1048576).toFixed(1)].join(" "));
        ' "$out" "$job" "$tr" "$srv" >> "$RESULTS"
      done
    done
  done
  echo "rep $rep done, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done

node -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split(" "));
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const key = (r) => r[0] + " " + r[1];
const order = [...new Set(rows.map(key))];
const pad = (s, n) => String(s).padEnd(n);
console.log(pad("job", 32) + pad("transport", 11) + pad("couchestor IOPS", 17) + pad("MB/s", 9) + pad("nbdkit IOPS", 13) + pad("MB/s", 9) + "ratio");
for (const k of order) {
  const cs = rows.filter((r) => key(r) === k && r[2] === "couchestor");
  const nk = rows.filter((r) => key(r) === k && r[2] === "nbdkit");
  const ci = med(cs.map((r) => +r[3])), cb = med(cs.map((r) => +r[4]));
  const ni = med(nk.map((r) => +r[3])), nb = med(nk.map((r) => +r[4]));
  const [job, tr] = k.split(" ");
  console.log(pad(job, 32) + pad(tr, 11) + pad(ci, 17) + pad(cb, 9) + pad(ni, 13) + pad(nb, 9) + (ci / ni).toFixed(2) + "x");
}
' "$RESULTS"
[ -n "${RAW:-}" ] && cp "$RESULTS" "$RAW"   # every run's figures: job transport server IOPS MiB/s
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
