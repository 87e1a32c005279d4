#!/bin/sh
# The README's results: moq-relayd with 1 and 2 workers, fanout 1→10, 1→100, 1→500 at
# 30 fps × 4 KiB, then the saturation search (highest subscribers with p99 < 50 ms and no
# loss). Relay pinned by taskset to RELAY_CPUS, client to CLIENT_CPUS. JSON per run goes to
# benches/results/. Build first: cargo build --release -p benches -p moq-relayd
set -eu
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
OUT=benches/results
DURATION=${DURATION:-10s}
CLIENT_CPUS=${CLIENT_CPUS:-1}
SATURATE=${SATURATE:-1}
mkdir -p "$OUT"
CFG_DIR=$(mktemp -d)
trap 'rm -rf "$CFG_DIR"' EXIT
relay_cmd() { # workers cpus
    echo "printf '[log]\nlevel = \"warn\"\n[server]\nbind = \"127.0.0.1:{port}\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = $1\npin = true\n[auth]\npublic = \"\"\n' > $CFG_DIR/relay-{port}.toml && exec taskset -c $2 $T/moq-relayd $CFG_DIR/relay-{port}.toml"
}
for W in 1 2; do
    if [ "$W" = 1 ]; then RELAY_CPUS=${RELAY_CPUS_1:-0}; else RELAY_CPUS=${RELAY_CPUS_2:-0,1}; fi
    for S in 10 100 500; do
        echo "== workers $W (cpus $RELAY_CPUS), 1 -> $S, client cpus $CLIENT_CPUS, $(cut -d' ' -f1-3 /proc/loadavg)"
        "$T/relay-bench" run --spawn "$(relay_cmd "$W" "$RELAY_CPUS")" \
            --publishers 1 --subscribers "$S" --fps 30 --frame-size 4096 --group-size 30 \
            --duration "$DURATION" --warmup 2s --ramp-up 3s --cpus "$CLIENT_CPUS" \
            --json "$OUT/w$W-s$S.json" $( [ "$W$S" = 1100 ] && echo --plot "$OUT/w1-s100.png" )
    done
    if [ "$SATURATE" = 1 ]; then
        echo "== saturation, workers $W"
        "$T/relay-bench" saturate --spawn "$(relay_cmd "$W" "$RELAY_CPUS")" \
            --publishers 1 --subscribers 50 --max 1000 --p99-ms 50 --fps 30 --frame-size 4096 \
            --duration "$DURATION" --warmup 2s --ramp-up 5s --cpus "$CLIENT_CPUS" \
            --json "$OUT/w$W-saturation.json"
    fi
done
