#!/usr/bin/env bash
# Large thin volume with real clients: couchestor vs `nbdkit file` on a sparse
# file (the named peer) in the same run. A VOL_GIB volume (default 1 TiB) gets
# DATA_MIB MiB of data scattered as 1 MiB extents (same offsets, same bytes on
# both servers, written by nbdcopy from a sparse source file), then each of
# these is timed REPS times, interleaved between the servers, median reported
# with the ratio couchestor/nbdkit (time: lower is better):
#   map        nbdinfo --map (BLOCK_STATUS over the whole export)
#   qemu-map   qemu-img map -f raw --output=json
#   to-null    nbdcopy export -> null:   (skips holes by BLOCK_STATUS)
#   to-nbd     nbdcopy export -> a second, fresh export of the same server
#   convert    qemu-img convert -n source file -> fresh export of the same server
# Then the daemon's event-loop delay while one client maps the whole volume
# with 4 GiB BLOCK_STATUS requests: the max gap of a 1 ms timer (probe GETs on
# /healthz every 5 ms meanwhile, their max latency).
#
# PEER_DIST=<another build> adds that build's daemon as a third server (the
# build before a change), same volumes and data, its ratio to nbdkit too.
#
#   bash bench/nbd-big-sparse.sh
#   VOL_GIB=4096 DATA_MIB=2048 REPS=5 DIST=.me-dist bash bench/nbd-big-sparse.sh
#   PEER_DIST=/tmp/before-dist NO_BUILD=1 DIST=.me-dist bash bench/nbd-big-sparse.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VOL_GIB=${VOL_GIB:-1024}
DATA_MIB=${DATA_MIB:-1536}
REPS=${REPS:-3}
WORK=${WORK:-/tmp/nbd-work/big-sparse}
DIST=${DIST:-dist}
export PATH="/usr/bin:/bin:$PATH"   # Debian's python3 / libnbd, not pyenv's

source bench/common.sh   # builds DIST, an empty $WORK, PIDS killed and $WORK removed on exit

# start_daemon DIR DIST: a daemon with one hot pool (and six cold ones), no demo volume; prints its ready line.
start_daemon() {
  local data=$1 dist=$2
  mkdir -p "$data"
  {
    echo "pools:"
    echo "  - { name: hot-0, tier: hot, path: pools/hot-0, capacity: auto }"
    for i in 0 1 2 3 4 5; do echo "  - { name: cold-$i, tier: cold, path: pools/cold-$i, capacity: auto }"; done
    echo "demoVolume: null"
  } > "$data/couchestor.yaml"
  node "$dist/src/cli.js" serve --data-dir "$data" --nbd-port 0 --api-port 0 --metrics-port 0 --s3-port 0 \
    > "$data.out" 2> "$data.err" &
  echo $! > "$data.pid"   # (a command substitution's subshell: the caller adds it to PIDS)
  for _ in $(seq 100); do grep -q '^couchestor ready' "$data.out" 2>/dev/null && break; sleep 0.1; done
  grep '^couchestor ready' "$data.out" | sed 's/^couchestor ready //' | grep . || { cat "$data.err" >&2; exit 1; }
  for v in big copy conv; do node "$dist/src/cli.js" volumes create "$v" "${VOL_GIB}G" --data-dir "$data" >/dev/null; done
}
READY=$(start_daemon "$WORK/couchestor" "$DIST"); PIDS+=("$(cat "$WORK/couchestor.pid")")
CS_SOCK=$(node -e 'console.log(JSON.parse(process.argv[1]).nbd.socketPath)' "$READY")
API_PORT=$(node -e 'console.log(JSON.parse(process.argv[1]).api.port)' "$READY")
SERVERS=(cs nk)
if [ -n "${PEER_DIST:-}" ]; then
  PE_READY=$(start_daemon "$WORK/peer" "$PEER_DIST"); PIDS+=("$(cat "$WORK/peer.pid")")
  PE_SOCK=$(node -e 'console.log(JSON.parse(process.argv[1]).nbd.socketPath)' "$PE_READY")
  PE_API_PORT=$(node -e 'console.log(JSON.parse(process.argv[1]).api.port)' "$PE_READY")
  SERVERS=(cs pe nk)
fi

# The source: a sparse file with DATA_MIB random 1 MiB extents at fixed pseudo-random offsets.
SRC="$WORK/src.img"
python3 - "$SRC" "$VOL_GIB" "$DATA_MIB" <<'PY'
import os, random, sys
path, gib, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = gib << 30
rnd = random.Random(13)
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
os.ftruncate(fd, size)
slots = rnd.sample(range(size >> 20), mib)
buf = os.urandom(1 << 20)
for s in slots:
    os.pwrite(fd, buf, s << 20)
os.close(fd)
PY

# nbdkit: three sparse files of the same size on the same filesystem.
for v in big copy conv; do truncate -s "${VOL_GIB}G" "$WORK/nk-$v.img"; done
NK_SOCK="$WORK/nk.sock"
nbdkit -f -U "$NK_SOCK" file dir="$WORK" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$NK_SOCK" ] && break; sleep 0.1; done
cs_uri() { echo "nbd+unix:///$1?socket=$CS_SOCK"; }
pe_uri() { echo "nbd+unix:///$1?socket=$PE_SOCK"; }
nk_uri() { echo "nbd+unix:///nk-$1.img?socket=$NK_SOCK"; }

nbdcopy --destination-is-zero "$SRC" "$(cs_uri big)"
nbdcopy --destination-is-zero "$SRC" "$(nk_uri big)"
[ -n "${PEER_DIST:-}" ] && nbdcopy --destination-is-zero "$SRC" "$(pe_uri big)"
echo "fill: ${DATA_MIB} MiB in a ${VOL_GIB} GiB volume; map extents: couchestor $(nbdinfo --map "$(cs_uri big)" | wc -l), nbdkit $(nbdinfo --map "$(nk_uri big)" | wc -l)"
uptime

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A T
run() { # name server cmd...
  local name=$1 srv=$2; shift 2
  T["$name/$srv"]+="$(secs "$@") "
}
for r in $(seq "$REPS"); do
  for srv in "${SERVERS[@]}"; do
    u=${srv}_uri
    run map "$srv" nbdinfo --map "$($u big)"
    run qemu-map "$srv" qemu-img map -f raw --output=json "$($u big)"
    run to-null "$srv" nbdcopy "$($u big)" null:
    run to-nbd "$srv" nbdcopy "$($u big)" "$($u copy)"
    run convert "$srv" qemu-img convert -n -f raw -O raw "$SRC" "$($u conv)"
    # back to empty for the next rep (outside the timing): TRIM the whole export
    for v in copy conv; do python3 -c 'import nbd,sys
h=nbd.NBD(); h.connect_uri(sys.argv[1]); s=h.get_size(); o=0
while o<s:
  n=min(1<<30,s-o); h.trim(n,o); o+=n
h.flush(); h.shutdown()' "$($u $v)"; done
  done
done
med() { tr ' ' '\n' <<< "${T[$1]}" | grep . | median; }
if [ -n "${PEER_DIST:-}" ]; then
  printf '%-10s %12s %12s %12s %10s %10s\n' job couchestor-s peer-s nbdkit-s cs/nbdkit peer/nbdkit
  for j in map qemu-map to-null to-nbd convert; do
    c=$(med "$j/cs"); p=$(med "$j/pe"); n=$(med "$j/nk")
    printf '%-10s %12.3f %12.3f %12.3f %10.2f %10.2f\n' "$j" "$c" "$p" "$n" "$(echo "$c / $n" | bc -l)" "$(echo "$p / $n" | bc -l)"
  done
else
  printf '%-10s %12s %12s %8s\n' job couchestor-s nbdkit-s ratio
  for j in map qemu-map to-null to-nbd convert; do
    c=$(med "$j/cs"); n=$(med "$j/nk")
    printf '%-10s %12.3f %12.3f %8.2f\n' "$j" "$c" "$n" "$(echo "$c / $n" | bc -l)"
  done
fi

# Event-loop delay on the daemon during whole-volume BLOCK_STATUS walks.
loop_probe() { # label api-port uri
node - "$@" <<'JS'
const http = require('node:http');
const { spawn } = require('node:child_process');
const [label, port, uri] = process.argv.slice(2);
let maxGet = 0, gets = 0, stop = false;
function probe() {
  if (stop) return;
  const t0 = process.hrtime.bigint();
  http.get({ host: '127.0.0.1', port, path: '/healthz' }, (res) => {
    res.resume();
    res.on('end', () => { const ms = Number(process.hrtime.bigint() - t0) / 1e6; maxGet = Math.max(maxGet, ms); gets++; setTimeout(probe, 5); });
  }).on('error', () => setTimeout(probe, 5));
}
probe();
const t0 = Date.now();
const c = spawn('sh', ['-c', `for i in 1 2 3; do nbdinfo --map '${uri}' >/dev/null; done`], { stdio: 'inherit' });
c.on('exit', () => { stop = true; console.log(`${label}: 3 whole-volume maps in ${Date.now() - t0} ms: ${gets} /healthz probes, max latency ${maxGet.toFixed(1)} ms`); });
JS
}
loop_probe couchestor "$API_PORT" "$(cs_uri big)"
[ -n "${PEER_DIST:-}" ] && loop_probe peer "$PE_API_PORT" "$(pe_uri big)"
uptime
