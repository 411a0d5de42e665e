#!/usr/bin/env bash
# Run every test of kulisse, on a fresh Debian/Ubuntu machine with a Rust toolchain.
#
# 1. installs the system programs the tests start (etcd, etcdctl, podman, python3's
#    kubernetes client, Jaeger built with Go) when missing; building kulisse itself needs
#    none of them;
# 2. installs mdbook from crates.io when missing (the book is built and link-checked);
# 3. builds the workspace once (one shared target dir: tests reuse the same build);
# 4. runs the whole test suite (unit tests, store conformance on embedded redb and on a
#    real etcd, end-to-end tests that run the real `kulisse` binary);
# 5. builds the book.
#
# With CI=true a test whose system program is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

if ! command -v mdbook >/dev/null 2>&1; then
  echo "test.sh: installing mdbook from crates.io (once)"
  cargo install mdbook --locked --version '^0.5'
fi

echo "test.sh: building the workspace"
cargo build --workspace --all-targets --locked

echo "test.sh: running the tests"
cargo test --workspace --locked --no-fail-fast

echo "test.sh: building the book"
mdbook build book
echo "test.sh: all done"
