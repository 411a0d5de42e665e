#!/usr/bin/env bash
# Make podman work for kulisse's podman runtime, on Debian or Ubuntu.
#
#   scripts/setup-podman.sh          # install what is missing, fix the config only if needed
#   scripts/setup-podman.sh --check  # only report (exit 1 if podman is missing or broken)
#
# 1. Installs podman, runc, catatonit (podman's init for pod infra containers, only a
#    "Recommends" of podman), iptables (port publishing) and busybox-static when missing.
#    `apt-get update` runs only if something is missing; sudo is used only when not root.
# 2. Builds the offline test image localhost/busybox:latest if it is missing
#    (scripts/build-busybox-image.sh).
# 3. Checks that `podman run --rm` of that image works with the host's defaults. Only if it
#    fails in one of the known ways
#      - crun: "cgroups in hybrid mode not supported"  (cgroup v1 hosts)
#      - "setrlimit ... operation not permitted" / "error setting rlimit" (containers may not
#        raise nofile/nproc to podman's defaults here)
#    does it write the drop-in /etc/containers/containers.conf.d/50-kulisse.conf:
#        [containers] default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
#        [engine]     runtime = "runc"
#    and checks again. A drop-in of that name that kulisse did not write is never
#    overwritten (the script stops and explains instead). Running it twice changes nothing.
# Rootful podman (root) is what kulisse's tests and CI use. The system drop-in (written with
# sudo when not root) applies to rootless podman too; ~/.config/containers is never touched.
set -euo pipefail

check_only=false
case "${1:-}" in
  --check) check_only=true ;;
  "") ;;
  -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
  *) echo "setup-podman.sh: unknown argument '$1' (expected --check or nothing)" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
say() { printf 'setup-podman: %s\n' "$*"; }

DROPIN_DIR=/etc/containers/containers.conf.d
DROPIN="$DROPIN_DIR/50-kulisse.conf"
MARKER="# written by kulisse scripts/setup-podman.sh"
IMAGE="${KULISSE_BUSYBOX_IMAGE:-localhost/busybox:latest}"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  fi
fi
as_root() {
  if [ "$(id -u)" -ne 0 ] && [ ${#sudo[@]} -eq 0 ]; then
    say "need root for: $* (run as root or install sudo)" >&2
    return 1
  fi
  "${sudo[@]}" "$@"
}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/bin/$1" ] || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have_catatonit() { have catatonit || [ -x /usr/libexec/podman/catatonit ]; }
have_static_busybox() {
  local b
  for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && ! { command -v ldd >/dev/null 2>&1 && ldd "$b" >/dev/null 2>&1; }; then
      return 0
    fi
  done
  return 1
}

# --- 1. packages -------------------------------------------------------------------------
missing=()
have podman || missing+=(podman)
have runc || missing+=(runc)
have_catatonit || missing+=(catatonit)
have iptables || missing+=(iptables)
have_static_busybox || missing+=(busybox-static)

if [ ${#missing[@]} -eq 0 ]; then
  say "ok: podman, runc, catatonit, iptables and a static busybox are installed"
elif $check_only; then
  say "missing packages: ${missing[*]}"
  exit 1
else
  if ! command -v apt-get >/dev/null 2>&1; then
    say "apt-get not found: this script knows Debian/Ubuntu only. Please install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  say "installing: ${missing[*]}"
  as_root apt-get update -q
  # With podman's recommended packages (netavark, aardvark-dns, ...): its network stack.
  as_root apt-get install -y -q "${missing[@]}"
  have podman || { say "podman is still missing after installing it" >&2; exit 1; }
fi

say "$(podman --version)"

# --- 2. the offline test image ------------------------------------------------------------
if ! podman image exists "$IMAGE"; then
  if $check_only; then
    say "the image $IMAGE is missing (scripts/build-busybox-image.sh builds it)"
    exit 1
  fi
  "$here/build-busybox-image.sh"
fi

# --- 3. does a container run? --------------------------------------------------------------
try_run() {
  # Prints podman's error output; succeeds when the container ran and said hello.
  local out
  if out="$(podman run --rm "$IMAGE" echo kulisse-podman-ok 2>&1)" &&
     grep -q kulisse-podman-ok <<<"$out"; then
    return 0
  fi
  printf '%s\n' "$out"
  return 1
}

if err="$(try_run)"; then
  say "ok: podman runs containers with this host's defaults"
  if [ -f "$DROPIN" ] && grep -qF "$MARKER" "$DROPIN"; then
    say "(kulisse's drop-in $DROPIN is in place)"
  fi
  exit 0
fi

say "podman run failed with the defaults:"
printf '    %s\n' "$err" | head -n 5 >&2

known=false
if grep -qiE 'hybrid mode not supported|cgroups.*hybrid' <<<"$err"; then
  say "known problem: crun does not support cgroup v1 'hybrid' hosts; runc does"
  known=true
fi
if grep -qiE 'setrlimit|error setting rlimit|RLIMIT_NOFILE|RLIMIT_NPROC' <<<"$err"; then
  say "known problem: podman's default nofile/nproc ulimits cannot be set on this host"
  known=true
fi
if ! $known; then
  say "this is not one of the known problems this script fixes; see the error above" >&2
  exit 1
fi
if $check_only; then
  say "would write $DROPIN"
  exit 1
fi

if [ -e "$DROPIN" ] && ! grep -qF "$MARKER" "$DROPIN"; then
  say "$DROPIN exists and was not written by kulisse; not touching it." >&2
  say "add these settings to it yourself:" >&2
  printf '    [containers]\n    default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n    [engine]\n    runtime = "runc"\n' >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  say "note: you run rootless podman; a drop-in in $DROPIN_DIR also applies to it"
fi

tmp="$(mktemp)"
cat >"$tmp" <<CONF
$MARKER
# Podman's defaults failed on this host (crun on cgroup v1 "hybrid", or default ulimits
# that cannot be set). These settings made \`podman run\` work. Delete this file to undo.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
CONF
as_root mkdir -p "$DROPIN_DIR"
as_root install -m 0644 "$tmp" "$DROPIN"
rm -f "$tmp"
say "wrote $DROPIN"

if err="$(try_run)"; then
  say "ok: podman runs containers now"
  # A podman service started before the drop-in still has the old settings.
  if [ -S /run/podman/podman.sock ]; then
    say "note: restart a running podman service (podman.socket/podman.service) so it reads the drop-in"
  fi
  exit 0
fi
say "podman run still fails with the drop-in:" >&2
printf '    %s\n' "$err" | head -n 5 >&2
exit 1
