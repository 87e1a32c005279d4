#!/bin/sh
# moq-relayd and moq-relay itself linked into one cluster, each way round: moq-relayd as
# the leaf of moq-relay (its upstream core dials moq-relay) and moq-relay as the leaf of
# moq-relayd (moq-relay's cluster dial reaches our workers). In each pairing a broadcast
# is published on one side and subscribed on the other, both directions, through the
# reference client (interop/examples/relay_flow.rs): every group must come through, in
# order and whole. Outside CI: building moq-relay takes ~6-10 min on 2 cores the first
# time; it is kept in a cache folder, as for auth-compare.sh.
#
#   interop/cluster-compare.sh [MOQ_RELAY_VERSION]   (default 0.14.12; or 0.17.10)
#
# Exits 1 when a flow fails.
set -eu
cd "$(dirname "$0")/.."
VERSION=${1:-0.14.12}
WORK=$(mktemp -d)
trap 'stop_relays; rm -rf "$WORK"' EXIT
. interop/relays.sh
MOQ_RELAY=$(moq_relay_build "$VERSION")
cargo build -q --release -p moq-relayd
cargo build -q --release -p interop --example relay_flow
FLOW=target/release/examples/relay_flow

GENERATION=$(moq_relay_generation "$VERSION")
# What differs between the two generations' files: the listener's section, `public` (a
# prefix in 0.14, a pattern in 0.17) and where a peer's pinned fingerprint goes.
if [ "$GENERATION" = 0.14 ]; then
    LISTEN=server PUBLIC="" PIN=client
else
    LISTEN=listen PUBLIC="**" PIN=connect
fi

# start NAME BINARY ID [PEER_PORT PEER_FINGERPRINT]: one relay, open to everyone, its
# web listener on the QUIC port number (for /certificate.sha256); with a peer, it dials
# it, pinning its certificate. Prints "port fingerprint".
start() {
    name=$1 binary=$2 id=$3 port=$(free_port)
    peer="" pin=""
    if [ $# -ge 5 ]; then
        peer="connect = [\"https://127.0.0.1:$4/\"]"
        pin="[$PIN]
tls.fingerprint = [\"$5\"]"
    fi
    cat > "$WORK/$name.toml" <<TOML
[log]
level = "info"
[$LISTEN]
bind = "127.0.0.1:$port"
tls.generate = ["localhost"]
[web.http]
listen = "127.0.0.1:$port"
[auth]
public = "$PUBLIC"
$pin
[cluster]
id = $id
$peer
TOML
    echo "$port $(serve "$name" "$binary" "$port")"
}

FAILED=0
# flow PUB_PORT PUB_FP SUB_PORT SUB_FP NAME
flow() {
    if ! "$FLOW" "https://127.0.0.1:$1/" "$2" "https://127.0.0.1:$3/" "$4" "$5"; then
        FAILED=1
    fi
}

OURS=target/release/moq-relayd
# moq-relayd as the leaf of moq-relay.
set -- $(start origin-moq-relay "$MOQ_RELAY" 1)
ORIGIN_PORT=$1 ORIGIN_FP=$2
set -- $(start leaf-moq-relayd "$OURS" 2 "$ORIGIN_PORT" "$ORIGIN_FP")
LEAF_PORT=$1 LEAF_FP=$2
sleep 2
flow "$ORIGIN_PORT" "$ORIGIN_FP" "$LEAF_PORT" "$LEAF_FP" moq-relay-to-moq-relayd
flow "$LEAF_PORT" "$LEAF_FP" "$ORIGIN_PORT" "$ORIGIN_FP" moq-relayd-to-moq-relay
stop_relays
# moq-relay as the leaf of moq-relayd.
set -- $(start origin-moq-relayd "$OURS" 3)
ORIGIN_PORT=$1 ORIGIN_FP=$2
set -- $(start leaf-moq-relay "$MOQ_RELAY" 4 "$ORIGIN_PORT" "$ORIGIN_FP")
LEAF_PORT=$1 LEAF_FP=$2
sleep 2
flow "$ORIGIN_PORT" "$ORIGIN_FP" "$LEAF_PORT" "$LEAF_FP" moq-relayd-origin-to-moq-relay-leaf
flow "$LEAF_PORT" "$LEAF_FP" "$ORIGIN_PORT" "$ORIGIN_FP" moq-relay-leaf-to-moq-relayd-origin
if [ "$FAILED" = 1 ]; then
    echo "cluster-compare: a flow failed; logs:" >&2
    for log in "$WORK"/*.log; do echo "== $log" >&2; tail -20 "$log" >&2; done
    exit 1
fi
echo "cluster-compare: every flow came through, both ways, with moq-relay $VERSION"
