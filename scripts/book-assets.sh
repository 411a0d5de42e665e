#!/usr/bin/env bash
# Regenerate the book's pictures of traces and its sample traces from real runs.
#
#   scripts/book-assets.sh
#
# Writes, from a throwaway cluster on 127.0.0.1 (nothing else is touched):
#   book/src/traces/apply-configmap.json  + book/src/images/apply-configmap.svg
#       `kulisse apply` of one ConfigMap: the API server's pipeline alone (chapter 3)
#   book/src/traces/apply-web.json        + book/src/images/apply-web.svg
#       `kulisse apply -f examples/web.yaml` on a fresh cluster: the whole road (chapter 9)
#   book/src/traces/node-failure.json     + book/src/images/node-failure.svg
#       a node killed with -9 and its pods moving to another node (chapter 10)
# The JSON files are OTLP JSON (`kulisse trace --export`), which Jaeger's UI loads through
# "Search -> JSON File"; the SVGs are drawn by `kulisse trace --svg`. Every run gives new ids
# and timings; the shapes stay the same.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'book-assets: %s\n' "$*"; }

cargo build -p kulisse --quiet
kulisse="$PWD/target/debug/kulisse"
out_traces="$PWD/book/src/traces"
out_images="$PWD/book/src/images"
mkdir -p "$out_traces" "$out_images"

work="$(mktemp -d -t kulisse-book-assets-XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# start_cluster NAME ARGS... : runs `kulisse up` in the background and waits until it answers.
start_cluster() {
  local name=$1; shift
  "$kulisse" up --data-dir "$work/$name" --listen 127.0.0.1:0 "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  export KULISSE_KUBECONFIG="$work/$name/kubeconfig"
  for _ in $(seq 1 300); do
    if [ -f "$KULISSE_KUBECONFIG" ] && "$kulisse" get namespaces >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  say "the cluster $name did not start:"; cat "$work/$name.log" >&2; exit 1
}

# save NAME TRACE [WIDTH]: the trace as OTLP JSON (compact when jq is there) and as an SVG.
save() {
  local name=$1 trace=$2 width=${3:-120}
  "$kulisse" trace "$trace" --export "$work/$name.json" >/dev/null
  if command -v jq >/dev/null 2>&1; then
    jq -c . "$work/$name.json" >"$out_traces/$name.json"
  else
    cp "$work/$name.json" "$out_traces/$name.json"
  fi
  "$kulisse" trace "$trace" --svg "$out_images/$name.svg" --width "$width" >/dev/null
  say "wrote book/src/traces/$name.json and book/src/images/$name.svg"
}

# 1. A ConfigMap, then the web application, on a fresh cluster.
start_cluster main
"$kulisse" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
data:
  hello: world
YAML
save apply-configmap last 100
"$kulisse" apply -f examples/web.yaml --follow >/dev/null
save apply-web last 140

# 2. A node goes away (the first lab of chapter 10).
start_cluster labs --nodes 0 --fast-failover
"$kulisse" kubelet --node-name node-3 --fast-failover >"$work/node-3.log" 2>&1 &
node3=$!
pids+=($node3)
until "$kulisse" get nodes node-3 2>/dev/null | grep -q ' Ready'; do sleep 0.5; done
"$kulisse" apply -f examples/web.yaml >/dev/null
"$kulisse" rollout status deployment/web >/dev/null
"$kulisse" kubelet --node-name node-4 --fast-failover >"$work/node-4.log" 2>&1 &
pids+=($!)
until "$kulisse" get nodes node-4 2>/dev/null | grep -q ' Ready'; do sleep 0.5; done
kill -9 "$node3"
wait "$node3" 2>/dev/null || true
until [ "$("$kulisse" get pods --field-selector spec.nodeName=node-4 --no-headers 2>/dev/null | wc -l)" -eq 2 ]; do
  sleep 0.5
done
"$kulisse" rollout status deployment/web >/dev/null
# The kubelet of node-4 is a process of its own: it sends its spans in batches.
sleep 6
# The eviction's trace: the node_status trace with the most spans.
trace=$("$kulisse" trace --list | awk '$2 == "controller.node_status" { print $3, $1 }' | sort -rn | head -1 | cut -d' ' -f2)
if [ -z "$trace" ]; then say "found no controller.node_status trace"; "$kulisse" trace --list; exit 1; fi
save node-failure "$trace" 140
say "done"
