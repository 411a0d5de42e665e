#!/usr/bin/env bash
# Try kulisse by hand in one go: build, start a throwaway cluster, apply the example app
# twice (created, then unchanged), look at it, and stop the cluster again.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p kulisse
bin=target/debug/kulisse
dir=$(mktemp -d)
log="$dir/up.log"
cleanup() { [ -n "${up:-}" ] && kill "$up" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

"$bin" up --data-dir "$dir" --listen 127.0.0.1:0 >"$log" 2>&1 &
up=$!
for _ in $(seq 100); do grep -q "API server:" "$log" 2>/dev/null && break; sleep 0.1; done
cat "$log"
export KULISSE_KUBECONFIG="$dir/kubeconfig"

run() { echo; echo "\$ kulisse $*"; "$bin" "$@"; }
run apply -f examples/web.yaml
run apply -f examples/web.yaml
run get deployments
run get services -o wide
run describe deployment web
run get namespaces
