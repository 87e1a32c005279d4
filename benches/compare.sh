#!/bin/sh
# Side-by-side: the same relay-bench scenario against moq-relayd (A) and another relay (B),
# interleaved A B A B on this machine, then the median of each figure and the ratio B / A.
#
#   benches/compare.sh [--b-cmd CMD] [--relay-cpus LIST] [--workers N] [relay-bench load args...]
#
# B defaults to the in-process reference relay built from moq-tokio/moq-net
# (interop's `probe --reference`). Any relay works: CMD is run by `sh -c`, must bind UDP
# 127.0.0.1:{port} ({port} is replaced), and is stopped with SIGTERM to its process group.
# Relays are pinned with taskset to --relay-cpus (default 0); give the client other CPUs
# with --cpus (default 1). Build first:
#   cargo build --release -p benches -p moq-relayd && cargo build --release -p interop --example probe
set -eu
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
RELAY_CPUS=0
WORKERS=1
B_CMD=""
while [ $# -gt 0 ]; do
    case "$1" in
        --b-cmd) B_CMD=$2; shift 2 ;;
        --relay-cpus) RELAY_CPUS=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        *) break ;;
    esac
done
for f in "$T/relay-bench" "$T/moq-relayd"; do
    [ -x "$f" ] || { echo "missing $f: build it first (see the header of $0)" >&2; exit 2; }
done
CFG_DIR=$(mktemp -d)
trap 'rm -rf "$CFG_DIR"' EXIT
A_CMD="printf '[log]\nlevel = \"warn\"\n[server]\nbind = \"127.0.0.1:{port}\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = $WORKERS\npin = true\n[auth]\npublic = \"\"\n' > $CFG_DIR/relay-{port}.toml && exec taskset -c $RELAY_CPUS $T/moq-relayd $CFG_DIR/relay-{port}.toml"
if [ -z "$B_CMD" ]; then
    [ -x "$T/examples/probe" ] || { echo "missing $T/examples/probe: cargo build --release -p interop --example probe" >&2; exit 2; }
    B_CMD="exec taskset -c $RELAY_CPUS $T/examples/probe --reference --bind 127.0.0.1:{port} --seconds 3600 --version moq-lite-05 --version moq-lite-04 --version moq-lite-03 >/dev/null"
fi
exec "$T/relay-bench" compare --a "$A_CMD" --a-name moq-relayd --b "$B_CMD" --b-name reference "$@"
