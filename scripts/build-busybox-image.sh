#!/usr/bin/env bash
# Build the container image `localhost/busybox:latest` from the host's static busybox, with
# no registry at all (kulisse's podman tests and examples run offline).
#
#   scripts/build-busybox-image.sh            # build it if podman does not have it yet
#   scripts/build-busybox-image.sh --force    # build it again
#
# What an image is, at its simplest: a root filesystem (a tar) plus a little configuration
# (the entrypoint, environment). This script makes one by hand:
#   1. an empty root directory with /bin/busybox (statically linked, so it needs no libc
#      inside the image) and one symlink per busybox applet (sh, httpd, echo, sleep, ...);
#   2. a few directories and files programs expect (/tmp, /etc/passwd, /www/index.html);
#   3. `tar` of that root, then `podman import` with PATH and a default command.
# busybox comes from Debian's busybox-static package (scripts/setup-podman.sh installs it).
# It never uses sudo: run it as the user whose podman should have the image (root in CI).
set -euo pipefail

IMAGE="${KULISSE_BUSYBOX_IMAGE:-localhost/busybox:latest}"
force=false
case "${1:-}" in
  --force) force=true ;;
  "") ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
  *) echo "build-busybox-image.sh: unknown argument '$1' (expected --force or nothing)" >&2; exit 2 ;;
esac

say() { printf 'build-busybox-image: %s\n' "$*"; }

if ! command -v podman >/dev/null 2>&1; then
  say "podman is not installed; run scripts/setup-podman.sh first" >&2
  exit 1
fi

if ! $force && podman image exists "$IMAGE"; then
  say "ok: $IMAGE is already there; nothing to do"
  exit 0
fi

busybox=""
for candidate in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    busybox="$candidate"
    break
  fi
done
if [ -z "$busybox" ]; then
  say "busybox not found; install Debian's busybox-static (scripts/setup-podman.sh does)" >&2
  exit 1
fi
# The image has no libc: only a statically linked busybox runs in it.
if command -v ldd >/dev/null 2>&1 && ldd "$busybox" >/dev/null 2>&1; then
  say "$busybox is dynamically linked; install busybox-static (it replaces busybox)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www" "$root/root" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
count=0
for applet in $("$busybox" --list); do
  case "$applet" in busybox|*/*|"") continue ;; esac
  ln -s busybox "$root/bin/$applet"
  count=$((count + 1))
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$root/etc/group"
printf '<html><body><h1>hello from busybox httpd in kulisse</h1></body></html>\n' > "$root/www/index.html"

tar -C "$root" -cf "$work/rootfs.tar" .
say "importing $IMAGE (busybox from $busybox, $count applets)"
podman import \
  --change 'ENV=PATH=/bin' \
  --change 'CMD=["sh"]' \
  --change 'WORKDIR=/' \
  --quiet "$work/rootfs.tar" "$IMAGE" >/dev/null
say "done: $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12) $IMAGE"
