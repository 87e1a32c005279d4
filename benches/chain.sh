#!/bin/sh
# relay-bench through two linked moq-relayd (the leaf's upstream core dials the origin):
# publishers on the origin, subscribers on the leaf; then the same load on the leaf
# alone. The difference of the p50s is what one hop adds. Each relay has one worker, both
# on CPU 0 (its link thread too); the client is on CPU 1. Issue 15: ≤ 1 ms per hop.
#
#   SUBS=100 DURATION=10s ROUNDS=3 sh benches/chain.sh
set -eu
cd "$(dirname "$0")/.."
SUBS=${SUBS:-100}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
export CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-off}
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-16}
cargo build -q --release -p moq-relayd -p benches
WORK=$(mktemp -d)
trap 'stop_relays; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
. interop/relays.sh

# start NAME ID [PEER_PORT PEER_FINGERPRINT] -> "port fingerprint"
start() {
    name=$1 id=$2 port=$(free_port)
    link="" upstream=""
    if [ $# -ge 4 ]; then
        link="connect = [\"https://127.0.0.1:$3/\"]
[client.tls]
fingerprint = [\"$4\"]"
        upstream="upstream_cpu = 0"
    fi
    cat > "$WORK/$name.toml" <<TOML
[log]
level = "warn"
[server]
bind = "127.0.0.1:$port"
tls.generate = ["localhost"]
[web.http]
listen = "127.0.0.1:$port"
[runtime]
workers = 1
cpus = [0]
$upstream
[auth]
public = ""
[cluster]
id = $id
# A case's broadcast must not outlive it into the next one (same name, bench/0).
linger = "0s"
$link
TOML
    echo "$port $(serve "$name" target/release/moq-relayd "$port")"
}

set -- $(start origin 1)
ORIGIN_PORT=$1 ORIGIN_FP=$2
set -- $(start leaf 2 "$ORIGIN_PORT" "$ORIGIN_FP")
LEAF_PORT=$1 LEAF_FP=$2
sleep 1
LOAD="--publishers 1 --subscribers $SUBS --fps 30 --frame-size 4096 --duration $DURATION --cpus 1 --moq-version 05"
for round in $(seq 1 "$ROUNDS"); do
    for case in direct chain; do
        extra=""
        [ "$case" = chain ] && extra="--publish-connect https://127.0.0.1:$ORIGIN_PORT/ --publish-fingerprint $ORIGIN_FP"
        # shellcheck disable=SC2086
        target/release/relay-bench run --connect "https://127.0.0.1:$LEAF_PORT/" --fingerprint "$LEAF_FP" \
            $extra $LOAD --json "$WORK/$case-$round.json" > /dev/null
        python3 - "$WORK/$case-$round.json" "$case" "$round" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["report"]
lat = r["latency"]
print(f"{sys.argv[2]:6} round {sys.argv[3]}: p50 {lat['p50_ms']:.3f} ms  p99 {lat['p99_ms']:.3f} ms  lost frames {r['lost_frames']}")
PY
    done
done
