#!/usr/bin/env bash
# A short cargo-fuzz run of every fuzz target (nightly toolchain).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
secs=${1:-20}
cd "$DMSM_REPO/fuzz"
# In the cache, like the other builds (the sanitizer flags make it a build
# of its own, so it does not share the workspace's directory).
export CARGO_TARGET_DIR="$DMSM_CACHE/cargo-target-fuzz"
for t in $(cargo +nightly fuzz list); do
	echo "fuzz: $t for ${secs}s"
	cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 | tail -3
done
