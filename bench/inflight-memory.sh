#!/usr/bin/env bash
# Memory held by NBD requests in flight: peak RSS (VmHWM) of the server while
# 16 clients (fio, ioengine=nbd, one libnbd connection each) write 4 MiB blocks
# at queue depth 32, for this build (daemon-wide budget, limits.inflightBytes,
# default 512 MiB), the build before it (per-connection cap of 128 MiB only),
# and `nbdkit file` (the named peer) on the same kind of sparse file; then
# write throughput with 1 and 4 clients (same blocks and depth), this build vs
# before. A fresh server per run (VmHWM is since start). Medians of REPS runs,
# ratios. Run it under `flock /tmp/bench.lock`.
#
#   BASE_REF=HEAD~3 bash bench/inflight-memory.sh     # before = that commit (a worktree in /tmp, built there)
#   BASE_DIST=/tmp/base/.x-dist bash bench/inflight-memory.sh   # before = an existing build (its tree needs node_modules and native/build)
#   DIST=.me-dist REPS=5 RUNTIME=8 bash bench/inflight-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${RUNTIME:-5}          # seconds per fio run (time_based)
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-16}
QD=${QD:-32}
BS=${BS:-4M}
REGION_MIB=64                  # each client writes its own region, looping
SIZE_MIB=$((CLIENTS * REGION_MIB))
WORK=${WORK:-/tmp/nbd-work/inflight-memory}
DIST=${DIST:-dist}
export PATH="/usr/bin:/bin:$PATH"   # Debian's python3 / libnbd, not pyenv's

command -v fio >/dev/null && command -v nbdkit >/dev/null || { echo "needs fio and nbdkit (apt-get install fio nbdkit)" >&2; exit 1; }

source bench/common.sh   # builds DIST, an empty $WORK, PIDS killed and $WORK removed on exit

BASE_TREE=""
if [ -z "${BASE_DIST:-}" ]; then
  BASE_REF=${BASE_REF:-HEAD~1}
  BASE_TREE=$(mktemp -d /tmp/inflight-base.XXXXXX)
  git worktree add --detach "$BASE_TREE" "$BASE_REF" >/dev/null 2>&1
  ln -s "$PWD/node_modules" "$BASE_TREE/node_modules"
  ln -s "$PWD/native/build" "$BASE_TREE/native/build"   # the native addons, built by npm install (not in git)
  (cd "$BASE_TREE" && npx tsc -p tsconfig.json --outDir .bench-dist >/dev/null || true)
  BASE_DIST="$BASE_TREE/.bench-dist"
  trap 'cleanup; git worktree remove --force "$BASE_TREE" >/dev/null 2>&1 || rm -rf "$BASE_TREE"' EXIT
fi
# A build's commit: that of the tree it sits in (a worktree's own), and whether that tree's src/ differs from it.
built_from() { local t; t=$(dirname "$1"); echo "$(git -C "$t" rev-parse --short HEAD)$(git -C "$t" diff --quiet HEAD -- src || echo ', src with uncommitted changes')"; }
echo "this build: $DIST ($(built_from "$DIST")); before: $BASE_DIST ($(built_from "$BASE_DIST"))"

SERVER_PID=""
URI=""
# Starts one server ($1: this | before | nbdkit) on a fresh data directory / file.
start_server() {
  local kind=$1 dir="$WORK/$1"
  rm -rf "$dir"; mkdir -p "$dir"
  if [ "$kind" = nbdkit ]; then
    truncate -s "${SIZE_MIB}M" "$dir/disk.img"
    nbdkit -f -U "$dir/nbd.sock" file "$dir/disk.img" 2> "$dir/err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 100); do [ -S "$dir/nbd.sock" ] && break; sleep 0.05; done
    URI="nbd+unix:///?socket=$dir/nbd.sock"
    return
  fi
  local dist=$DIST
  [ "$kind" = before ] && dist=$BASE_DIST
  { echo 'pools:'; echo '  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }'
    for i in 0 1 2 3 4 5; do echo "  - { name: cold-$i, tier: cold, path: pools/cold-$i, capacity: auto }"; done
    echo 'demoVolume: null'; } > "$dir/couchestor.yaml"
  node "$dist/src/cli.js" volumes create bench "${SIZE_MIB}M" --data-dir "$dir" > /dev/null 2> "$dir/err" || { cat "$dir/err" >&2; exit 1; }
  node "$dist/src/cli.js" serve --data-dir "$dir" --nbd-port 0 --api-port 0 --metrics-port 0 --s3-port 0 > "$dir/out" 2> "$dir/err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 200); do grep -q '^couchestor ready' "$dir/out" 2>/dev/null && break; sleep 0.05; done
  grep -q '^couchestor ready' "$dir/out" || { cat "$dir/err" >&2; exit 1; }
  URI="nbd+unix:///bench?socket=$dir/nbd.sock"
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}

# fio write job with $1 clients; prints MB/s (all clients together).
fio_write() {
  fio --name=w --ioengine=nbd --uri="$URI" --rw=write --bs="$BS" --iodepth="$QD" --numjobs="$1" \
    --size="${REGION_MIB}M" --offset_increment="${REGION_MIB}M" --time_based --runtime="$RUNTIME" \
    --group_reporting --output-format=json 2>/dev/null \
    | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s.slice(s.indexOf("{")));console.log((j.jobs[0].write.bw_bytes/1e6).toFixed(1))})'
}

peak_rss_mib() { awk '/^VmHWM/ { printf "%.0f\n", $2 / 1024 }' "/proc/$SERVER_PID/status"; }

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A RSS TP1 TP4
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq "$REPS"); do
  # Alternate the order so drift in the machine's load is not charged to one side.
  if [ $((rep % 2)) = 1 ]; then order="this before nbdkit"; else order="nbdkit before this"; fi
  for kind in $order; do
    start_server "$kind"
    mbs=$(fio_write "$CLIENTS")
    rss=$(peak_rss_mib)
    RSS[$kind]+="$rss "
    line="rep $rep $kind: ${CLIENTS}x qd$QD $BS: peak RSS ${rss} MiB (${mbs} MB/s)"
    if [ "$kind" != nbdkit ]; then
      t1=$(fio_write 1); t4=$(fio_write 4)
      TP1[$kind]+="$t1 "; TP4[$kind]+="$t4 "
      line+="; 1 client ${t1} MB/s, 4 clients ${t4} MB/s"
    fi
    echo "$line"
    stop_server
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

med() { tr ' ' '\n' <<< "$1" | grep . | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
r_this=$(med "${RSS[this]}"); r_before=$(med "${RSS[before]}"); r_kit=$(med "${RSS[nbdkit]}")
echo
echo "peak RSS, ${CLIENTS} clients x qd$QD x $BS writes (median of $REPS, MiB):"
echo "  this $r_this  before $r_before  nbdkit file $r_kit   this/before $(ratio "$r_this" "$r_before")  this/nbdkit $(ratio "$r_this" "$r_kit")"
for n in 1 4; do
  if [ $n = 1 ]; then a=$(med "${TP1[this]}"); b=$(med "${TP1[before]}"); else a=$(med "${TP4[this]}"); b=$(med "${TP4[before]}"); fi
  echo "write throughput, $n client(s) x qd$QD x $BS (median of $REPS, MB/s): this $a  before $b  this/before $(ratio "$a" "$b")"
done
