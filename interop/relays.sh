# Shared by interop/auth-compare.sh, interop/cluster-compare.sh and benches/chain.sh
# (`. interop/relays.sh` from the repository root, with $WORK set to a scratch folder):
# building moq-relay once into a cache, free ports, and relays started in the background
# and stopped on exit.

# moq_relay_build VERSION: prints the path of moq-relay VERSION, built from its published
# crate into ~/.cache/moq-relay/VERSION the first time (6-10 min on 2 cores).
moq_relay_build() {
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/moq-relay/$1
    if [ ! -x "$cache/bin/moq-relay" ]; then
        echo "building moq-relay $1 into $cache (once)" >&2
        # Its own target folder, so our Cargo.lock and target/ are not touched. --locked
        # where the release's own lock still resolves (0.14.12 does; a newer alpha of
        # http-cache-reqwest breaks its unlocked build), else the newest deps.
        CARGO_TARGET_DIR="$cache/build" cargo install moq-relay --version "$1" --root "$cache" --locked >&2 ||
            CARGO_TARGET_DIR="$cache/build" cargo install moq-relay --version "$1" --root "$cache" >&2
        rm -rf "$cache/build"
    fi
    echo "$cache/bin/moq-relay"
}

# moq_relay_generation VERSION: the config generation VERSION reads, 0.14 (`[server]`,
# prefixes) or 0.17 (`[listen]`, patterns).
moq_relay_generation() {
    case "$1" in
    0.14.*) echo 0.14 ;;
    *) echo 0.17 ;;
    esac
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# serve NAME BINARY PORT: runs `BINARY $WORK/NAME.toml` in the background (log in
# $WORK/NAME.log, pid in $WORK/pids, so stop_relays finds it even when serve ran in a
# subshell) and prints the fingerprint its /certificate.sha256 on tcp PORT answers.
serve() {
    "$2" "$WORK/$1.toml" > "$WORK/$1.log" 2>&1 &
    echo $! >> "$WORK/pids"
    for _ in $(seq 1 100); do
        if fingerprint=$(curl -sf "http://127.0.0.1:$3/certificate.sha256"); then
            echo "$fingerprint"
            return
        fi
        sleep 0.1
    done
    echo "$1 did not serve within 10 s:" >&2
    cat "$WORK/$1.log" >&2
    exit 1
}

stop_relays() {
    if [ -f "$WORK/pids" ]; then
        # shellcheck disable=SC2046
        # KILL: a TERM would start a drain (up to drain_timeout) in each relay.
        kill -KILL $(cat "$WORK/pids") 2>/dev/null || true
        rm -f "$WORK/pids"
    fi
}
