#!/bin/sh
# Churn soak (issue 17; not CI): one relay worker, 1 -> 200 reference-client subscribers,
# one leaving and one joining every second, the publisher restarting every minute, for
# SECONDS (default 3600). Fails on RSS drift past 1 %/h after warm-up (the first third;
# the median of the later half against the earlier one; judged from 30 min up), a panic, a session left open, or a group lost by a subscriber that stayed.
# Prints the relay's RSS every 10 s and a summary line `soak: ...`.
#
#   benches/soak.sh [SECONDS]
set -eu
cd "$(dirname "$0")/.."
export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
SOAK_SECS=${1:-${SOAK_SECS:-3600}} exec cargo test --release -p moq-relayd --test soak -- \
    --ignored --nocapture --test-threads 1
