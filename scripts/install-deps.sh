#!/usr/bin/env bash
# Install the system programs kulisse's tests need, on Debian or Ubuntu. (Building kulisse
# needs none: not even `protoc`, see backends/vendor/etcd-client/README.md.)
#
#   scripts/install-deps.sh          # install what is missing
#   scripts/install-deps.sh --check  # only report what is missing (exit 1 if anything is)
#
# What and why:
#   etcd     (etcd-server)       - the real etcd the etcd store tests start on 127.0.0.1
#   etcdctl  (etcd-client)       - etcd's own CLI; tests (and you) use it to look at the keys
#   haproxy  (haproxy)           - the load balancer in front of the API servers of
#            `kulisse up --masters 3` (tests/tests/masters.rs, the book's "Several masters")
#   ip       (iproute2)          - the network namespaces of `kulisse up --node-hosts`
#            (tests/tests/masters.rs, the book's "Several masters", Lab 4)
#   podman, runc, catatonit, iptables, busybox-static - `kulisse up --runtime podman` and its
#            tests; installed and checked by scripts/setup-podman.sh, which this script runs
#   python3, python3-pip and the PyPI package `kubernetes` (the official Python client) -
#            tests/tests/clients.rs runs tests/clients/python_client.py against a cluster
#   jaeger   (Jaeger v1.75.0, built with Go) - tests/tests/jaeger.rs and the book's Jaeger
#            steps; see jaeger_setup below
#
# Only missing programs are installed; `apt-get update` runs once, and only if something is
# missing. When everything is there the script changes nothing and finishes at once.
# sudo is used only when not running as root. (On a machine with systemd, Debian's
# etcd-server package also starts an etcd service on 127.0.0.1:2379; the tests do not use it,
# they start their own etcd on free ports.)
set -euo pipefail

check_only=false
case "${1:-}" in
  --check) check_only=true ;;
  "") ;;
  -h|--help) sed -n '2,/^set -e/{/^set -e/d;p}' "$0"; exit 0 ;;
  *) echo "install-deps.sh: unknown argument '$1' (expected --check or nothing)" >&2; exit 2 ;;
esac

say() { printf 'install-deps: %s\n' "$*"; }

# "command package" pairs: the program the tests look for, and the Debian package with it.
needs=(
  "etcd etcd-server"
  "etcdctl etcd-client"
  "haproxy haproxy"
  "ip iproute2"
  "python3 python3"
  # --- later (a future issue): the container runtime and the book -------------------------
  # podman, runc, catatonit, iptables, busybox-static: not listed here but installed by
  #   scripts/setup-podman.sh (run at the end, see podman_setup below), which also writes a
  #   containers.conf drop-in only where podman's defaults fail (crun on cgroup v1 hybrid,
  #   ulimits), never over a user's file, and builds the offline image localhost/busybox:latest
  #   (scripts/build-busybox-image.sh).
  # "mdbook ..."  (not packaged in Debian 12: install with `cargo install mdbook`)
  # ------------------------------------------------------------------------------------------
)

# The container runtime of `kulisse --runtime podman` and its tests (see the block above).
podman_setup() {
  local here
  here="$(cd "$(dirname "$0")" && pwd)"
  if $check_only; then
    "$here/setup-podman.sh" --check
  else
    "$here/setup-podman.sh"
    "$here/build-busybox-image.sh"
  fi
}

# The official Python client (PyPI `kubernetes`) for tests/tests/clients.rs: installed with
# pip only when `python3 -c 'import kubernetes'` fails. Debian marks its python3 as
# "externally managed" (PEP 668) and pip refuses to install there; then pip is asked again
# with --break-system-packages, which puts the package under /usr/local, apart from apt's.
python_client_setup() {
  if ! command -v python3 >/dev/null 2>&1; then
    say "missing: python3 (needed for the Python client test)"
    return 1
  fi
  if python3 -c 'import kubernetes' >/dev/null 2>&1; then
    say "ok: python package kubernetes ($(python3 -c 'import kubernetes; print(kubernetes.__version__)' 2>/dev/null))"
    return 0
  fi
  if $check_only; then
    say "missing: python package kubernetes (pip install kubernetes)"
    return 1
  fi
  if ! python3 -m pip --version >/dev/null 2>&1; then
    say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends python3-pip"
    "${sudo[@]}" apt-get install -y -q --no-install-recommends python3-pip
  fi
  say "running: python3 -m pip install kubernetes"
  if ! python3 -m pip install -q kubernetes; then
    say "pip refused (a PEP 668 externally managed python?); retrying with --break-system-packages"
    python3 -m pip install -q --break-system-packages kubernetes
  fi
  python3 -c 'import kubernetes' || { say "python package kubernetes still not importable" >&2; return 1; }
  say "done: installed python package kubernetes"
}

# Jaeger v1.75.0 (Jaeger v2, the image jaegertracing/jaeger:2.12.0), the trace viewer of
# tests/tests/jaeger.rs and of the book's Jaeger steps. Debian has no package; Go builds it
# from Go's module proxy. `go install github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0`
# refuses (Jaeger's go.mod has replace directives), so it is built inside a throwaway module
# that requires it. The binary goes to Go's binary directory, $(go env GOBIN) or else
# $(go env GOPATH)/bin (~/go/bin by default), where the tests look for it when it is not on
# PATH. The build takes several CPU-minutes; without Go, the script says what to install.
JAEGER_VERSION=v1.75.0
jaeger_setup() {
  local bin
  if command -v jaeger >/dev/null 2>&1; then
    say "ok: jaeger ($(command -v jaeger))"
    return 0
  fi
  if command -v go >/dev/null 2>&1; then
    bin="$(go env GOBIN)"
    [ -n "$bin" ] || bin="$(go env GOPATH | cut -d: -f1)/bin"
    if [ -x "$bin/jaeger" ]; then
      say "ok: jaeger ($bin/jaeger; add $bin to PATH to run it by name)"
      return 0
    fi
  fi
  if $check_only; then
    say "missing: jaeger $JAEGER_VERSION (this script builds it with Go)"
    return 1
  fi
  if ! command -v go >/dev/null 2>&1; then
    say "missing: jaeger $JAEGER_VERSION, and Go to build it. Install Go (https://go.dev/dl/, 1.24 or newer)" >&2
    say "  and run this script again, or run Jaeger's image: podman run --rm -p 127.0.0.1:16686:16686 -p 127.0.0.1:4317:4317 -p 127.0.0.1:4318:4318 docker.io/jaegertracing/jaeger:2.12.0" >&2
    return 1
  fi
  local tmp
  tmp="$(mktemp -d)"
  say "running: go install github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION (in a throwaway module, into $bin; several minutes)"
  (
    cd "$tmp"
    go mod init kulisse-jaeger-install >/dev/null 2>&1
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
    GOBIN="$bin" go install github.com/jaegertracing/jaeger/cmd/jaeger
  ) || { rm -rf "$tmp"; say "building jaeger failed" >&2; return 1; }
  rm -rf "$tmp"
  [ -x "$bin/jaeger" ] || { say "jaeger is still not in $bin" >&2; return 1; }
  say "done: installed $bin/jaeger"
}

have() {
  # etcd is installed to /usr/bin by Debian, but check the usual places even if PATH is odd.
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || [ -x "/usr/local/bin/$1" ]
}

missing_pkgs=()
for pair in "${needs[@]}"; do
  cmd=${pair%% *}
  pkg=${pair#* }
  if have "$cmd"; then
    say "ok: $cmd ($(command -v "$cmd" 2>/dev/null || echo "/usr/bin/$cmd"))"
  else
    say "missing: $cmd (Debian package $pkg)"
    missing_pkgs+=("$pkg")
  fi
done

if [ ${#missing_pkgs[@]} -eq 0 ]; then
  say "everything is installed"
  sudo=()
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo=(sudo)
  py_ok=true
  python_client_setup || py_ok=false
  jaeger_setup || py_ok=false
  podman_setup
  $py_ok || exit 1
  exit 0
fi

if $check_only; then
  say "would install: ${missing_pkgs[*]}"
  python_client_setup || true
  jaeger_setup || true
  podman_setup || true
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  say "apt-get not found: this script knows Debian/Ubuntu only. Please install: ${missing_pkgs[*]}" >&2
  exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    say "not root and sudo is not installed; run as root or install: ${missing_pkgs[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
say "running: ${sudo[*]:+${sudo[*]} }apt-get update"
"${sudo[@]}" apt-get update -q
say "running: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends ${missing_pkgs[*]}"
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}"

# Check again, so a package that did not provide the program is reported, not ignored.
still=()
for pair in "${needs[@]}"; do
  cmd=${pair%% *}
  have "$cmd" || still+=("$cmd")
done
if [ ${#still[@]} -ne 0 ]; then
  say "still missing after installing: ${still[*]}" >&2
  exit 1
fi
say "done: installed ${missing_pkgs[*]}"
python_client_setup
jaeger_setup
podman_setup
