#!/bin/sh
# The same token cases against moq-relayd and against moq-relay itself, with one
# relay.toml between them (only the port differs), and the outcomes diffed: the
# reference for auth outcomes is the real relay (issue 13). Outside CI: building
# moq-relay takes ~6-10 min on 2 cores the first time; it is kept in a cache folder.
#
#   interop/auth-compare.sh [MOQ_RELAY_VERSION]   (default 0.14.12; 0.17.10 for the
#                                                  0.17 file form, public patterns only)
#
# Exits 1 when an outcome differs, and prints both columns.
set -eu
cd "$(dirname "$0")/.."
VERSION=${1:-0.14.12}
WORK=$(mktemp -d)
trap 'stop_relays; rm -rf "$WORK"' EXIT
. interop/relays.sh
MOQ_RELAY=$(moq_relay_build "$VERSION")
cargo build -q --release -p moq-relayd
cargo build -q --release -p interop --example auth_cases
CASES=target/release/examples/auth_cases
"$CASES" mint "$WORK"

# One file per relay, the same but for the port. The web listener takes the QUIC port's
# number on TCP and serves /certificate.sha256, which both relays answer. A 0.17 file
# has no key (0.17 verifies no JWT itself: it asks an [auth] url server) and no client
# CA (0.17 refuses one under public-only auth), and says `public` as a pattern.
GENERATION=$(moq_relay_generation "$VERSION")
start() {
    name=$1 binary=$2 port=$(free_port)
    if [ "$GENERATION" = 0.14 ]; then
        cat > "$WORK/$name.toml" <<TOML
[log]
level = "warn"
[server]
bind = "127.0.0.1:$port"
tls.generate = ["localhost"]
tls.root = ["$WORK/tls/ca.pem"]
[web.http]
listen = "127.0.0.1:$port"
[auth]
key_dir = "$WORK/keys"
public = "anon"
TOML
    else
        cat > "$WORK/$name.toml" <<TOML
[log]
level = "warn"
[listen]
bind = "127.0.0.1:$port"
tls.generate = ["localhost"]
[web.http]
listen = "127.0.0.1:$port"
[auth]
public = "anon/**"
TOML
    fi
    echo "$port $(serve "$name" "$binary" "$port")"
}

CERTIFICATES=""
[ "$GENERATION" = 0.17 ] && CERTIFICATES=--no-certificates
set -- $(start moq-relay "$MOQ_RELAY")
"$CASES" run "$WORK" "127.0.0.1:$1" "$2" $CERTIFICATES > "$WORK/moq-relay.out"
set -- $(start moq-relayd target/release/moq-relayd)
"$CASES" run "$WORK" "127.0.0.1:$1" "$2" $CERTIFICATES > "$WORK/moq-relayd.out"

echo "case transport | moq-relay $VERSION | moq-relayd"
paste -d'|' "$WORK/moq-relay.out" "$WORK/moq-relayd.out" | awk -F'|' '{
    split($1, a, " "); split($2, b, " ");
    ours = $2; sub(/^[^ ]+ [^ ]+ /, "", ours); theirs = $1; sub(/^[^ ]+ [^ ]+ /, "", theirs);
    mark = (theirs == ours) ? "" : "   <-- differs";
    printf "%s %s | %s | %s%s\n", a[1], a[2], theirs, ours, mark }'
if ! diff -q "$WORK/moq-relay.out" "$WORK/moq-relayd.out" >/dev/null; then
    echo "auth-compare: outcomes differ" >&2
    exit 1
fi
echo "auth-compare: every outcome is the same"
