#!/bin/sh
# Two builds of moq-relayd side by side: the same relay-bench client, 1 relay worker
# pinned to CPU 0, the client on CPU 1, A B A B, medians and ratios.
#
#   benches/before-after.sh BEFORE_BINARY [AFTER_BINARY] [relay-bench load args...]
#
# Build the older commit in its own worktree first, e.g.
#   git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release -p moq-relayd)
#   cargo build --release -p benches -p moq-relayd
#   benches/before-after.sh /tmp/before/target/release/moq-relayd
# Defaults: 1 publisher, 30 fps x 4096 B, 10 s, 3 rounds, at 1->100 and 1->250
# (SUBS="100 250" to change the counts).
set -eu
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
BEFORE=$1; shift
AFTER=$T/moq-relayd
if [ $# -gt 0 ] && [ -x "$1" ]; then AFTER=$1; shift; fi
cfg() {
    echo "printf '[log]\nlevel = \"warn\"\n[server]\nbind = \"127.0.0.1:{port}\"\ntls.generate = [\"localhost\"]\n[runtime]\nworkers = 1\npin = true\n[auth]\npublic = \"\"\n' > $CFG_DIR/$1-{port}.toml && exec taskset -c 0 $2 $CFG_DIR/$1-{port}.toml"
}
CFG_DIR=$(mktemp -d)
trap 'rm -rf "$CFG_DIR"' EXIT
for subs in ${SUBS:-100 250}; do
    echo "=== 1 -> $subs"
    "$T/relay-bench" compare --a "$(cfg before "$BEFORE")" --a-name before \
        --b "$(cfg after "$AFTER")" --b-name after --rounds 3 --publishers 1 \
        --subscribers "$subs" --fps 30 --frame-size 4096 --duration 10s --cpus 1 "$@"
done
