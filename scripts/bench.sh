#!/usr/bin/env bash
# Build kulisse in release mode and run `kulisse bench` with the given arguments.
#   scripts/bench.sh --quick                 # a few minutes: 50 nodes / 2,000 pods, ...
#   scripts/bench.sh                         # the default curve (see `kulisse bench --help`)
#   scripts/bench.sh --cluster 5000x150000 --scheduler none --writes 0
# The release build keeps line tables (CARGO_PROFILE_RELEASE_DEBUG), so `perf record -g
# --call-graph dwarf` on the children shows source lines. Benchmarks print figures; they
# never fail on a timing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-line-tables-only}"
cargo build --quiet --release -p kulisse
exec target/release/kulisse bench "$@"
