# Sourced by the NBD shell benches after they set WORK and DIST: builds DIST
# (unless NO_BUILD=1: then DIST is run as it is; tsc emits even with others'
# type errors), makes an empty $WORK, and on exit kills every pid pushed to
# PIDS and removes $WORK.
[ -n "${NO_BUILD:-}" ] || npx tsc -p tsconfig.json --outDir "$DIST" >/dev/null || true
rm -rf "$WORK"
mkdir -p "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
