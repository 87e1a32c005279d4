#!/bin/sh
# What scraping /metrics costs the relay: the same moq-relayd binary A B A B, both with
# an [internal] listener, B scraped at $RATE (default 100/s: every 10 ms, a Prometheus
# 1000x more eager than the usual 10 s) for the whole run. 1 relay worker pinned to CPU 0;
# the relay keeps its control thread off the worker's core, so it shares CPU 1 with the
# client and the scraper, as on a host whose workers have cores of their own. The relay's
# CPU per frame includes its control thread, which answers each scrape.
#
#   benches/scrape-cost.sh [RELAY_BINARY] [relay-bench load args...]
#
# Needs curl. Defaults: 1 publisher, 30 fps x 4096 B (FPS, FRAME_SIZE), 10 s, 3 rounds, 1->100 (SUBS to
# change the counts, ROUNDS and DURATION the run). SCRAPE_PATH=health asks /health
# instead: the same requests on the same core without the metrics behind them.
set -eu
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
RELAY=$T/moq-relayd
if [ $# -gt 0 ] && [ -x "$1" ]; then RELAY=$1; shift; fi
RATE=${RATE:-100/s}
command -v curl >/dev/null || { echo "scrape-cost.sh: needs curl" >&2; exit 1; }
CFG_DIR=$(mktemp -d)
trap 'rm -rf "$CFG_DIR"' EXIT
# The internal listener takes the UDP port's number on TCP: free, and known to the
# scraper without parsing the log.
config="printf '[log]\nlevel = \"warn\"\n[server]\nbind = \"127.0.0.1:{port}\"\ntls.generate = [\"localhost\"]\n[internal]\nlisten = \"127.0.0.1:{port}\"\n[runtime]\nworkers = 1\ncpus = [0]\npin = true\n[auth]\npublic = \"\"\n' > $CFG_DIR/{port}.toml"
quiet="$config && exec $RELAY $CFG_DIR/{port}.toml"
# The scraper keeps one connection open, as Prometheus does, and asks at a fixed rate;
# it writes each answer's status to $CFG_DIR/{port}.codes. It is started twice detached
# (`( ( ... ) & )`) so that it is not the relay's child: relay-bench costs the relay with
# its descendants, and curl's CPU is not the relay's. After `exec`, $$ is the relay's
# pid: the watcher stops the scraper when the relay stops.
scraped="$config && ( (taskset -c 1 curl -s --rate $RATE -w '%{stderr}%{http_code}\\n' \
'http://127.0.0.1:{port}/${SCRAPE_PATH:-metrics}?n=[1-1000000]' >/dev/null 2>$CFG_DIR/{port}.codes & c=\$!; \
while kill -0 \$\$ 2>/dev/null; do sleep 0.2; done; kill \$c) & ) && \
exec $RELAY $CFG_DIR/{port}.toml"
for subs in ${SUBS:-100}; do
    echo "=== 1 -> $subs"
    "$T/relay-bench" compare --a "$quiet" --a-name unscraped \
        --b "$scraped" --b-name "scraped-$RATE" --rounds "${ROUNDS:-3}" --publishers 1 \
        --subscribers "$subs" --fps "${FPS:-30}" --frame-size "${FRAME_SIZE:-4096}" --duration "${DURATION:-10s}" --cpus 1 "$@"
done
for codes in "$CFG_DIR"/*.codes; do
    [ -e "$codes" ] || continue
    echo "scraped run: $(grep -c '^200$' "$codes") answered 200, $(grep -vc '^200$' "$codes") other"
done
