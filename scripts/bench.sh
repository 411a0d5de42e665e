#!/usr/bin/env bash
# Build kulisse in release mode and run `kulisse bench` with the given arguments.
#   scripts/bench.sh --quick                 # a few minutes: 50 nodes / 2,000 pods, ...
#   scripts/bench.sh                         # every case (see `kulisse bench --help`), with
#                                            # the 30-minute soak (--soak 100x30); --quick
#                                            # leaves the soak out
#   scripts/bench.sh --cluster 5000x150000 --scheduler none --writes 0
# The release build keeps line tables (CARGO_PROFILE_RELEASE_DEBUG), so `perf record -g
# --call-graph dwarf` on the children shows source lines. Benchmarks print figures; they
# never fail on a timing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-line-tables-only}"
cargo build --quiet --release -p kulisse
soak=(--soak 100x30)
for arg in "$@"; do
  [ "$arg" = "--quick" ] && soak=()
done
# A --soak given here comes later and wins.
exec target/release/kulisse bench "${soak[@]}" "$@"
