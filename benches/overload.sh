#!/bin/sh
# Overload on one relay worker (issue 17): relay-bench past what one core carries, the
# relay pinned to CPU 0 and the client to CPU 1, each shape once, then the relay's own
# counters from /metrics (groups reset as stale, groups dropped by the byte bound).
#
#   benches/overload.sh [RELAY_BINARY]
#
# Shapes (SHAPES to pick): video-1000 (1 -> 1000, 30 fps x 8000 B, 2 s groups: at
# capacity), video-1500 (past it), chat-3600 (3 broadcasts -> 1200 each, 10 fps x 300 B,
# one frame per group: past it). relay-bench subscribers ask for max latency 0 (live
# edge, as moq-net clients do by default).
set -eu
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
RELAY=${1:-$T/moq-relayd}
command -v curl >/dev/null || { echo "overload.sh: needs curl" >&2; exit 1; }
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
run() {
    name=$1; shift
    # The relay's counters are read 2 s before the end of the measured window.
    at=$(( 5 + 2 + ${DURATION:-20} - 2 ))
    cfg="printf '[log]\nlevel = \"warn\"\n[server]\nbind = \"127.0.0.1:{port}\"\ntls.generate = [\"localhost\"]\n[internal]\nlisten = \"127.0.0.1:{port}\"\n[runtime]\nworkers = 1\ncpus = [0]\npin = true\n[auth]\npublic = \"\"\n' > $DIR/{port}.toml"
    scrape="( (sleep $at; curl -s http://127.0.0.1:{port}/metrics > $DIR/$name.metrics) & )"
    echo "=== $name"
    "$T/relay-bench" run --spawn "$cfg && $scrape && exec $RELAY $DIR/{port}.toml" --cpus 1 \
        --duration "${DURATION:-20}s" --ramp-up 5s --warmup 2s "$@"
    grep -E '^moq_relayd_(groups_expired|groups_dropped)_total' "$DIR/$name.metrics" || true
}
for shape in ${SHAPES:-video-1000 video-1500 chat-3600}; do
    case $shape in
    video-1000) run "$shape" --publishers 1 --subscribers 1000 --fps 30 --frame-size 8000 --group-size 60 ;;
    video-1500) run "$shape" --publishers 1 --subscribers 1500 --fps 30 --frame-size 8000 --group-size 60 ;;
    chat-3600) run "$shape" --publishers 3 --subscribers 1200 --fps 10 --frame-size 300 --group-size 1 ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
    esac
done
