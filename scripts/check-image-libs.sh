#!/usr/bin/env bash
# Checks deploy/Dockerfile's runtime stage without a container engine: in a clean Debian 12 root (debootstrap
# --variant=minbase, as close to debian:bookworm-slim as debootstrap makes), installs exactly the packages the
# Dockerfile's runtime stage installs, copies the release binary in, and requires that `ldd` finds every library
# it links and that `custodia --help` and `custodia keygen` run there.
#
# Usage: scripts/check-image-libs.sh [path/to/custodia]   (default: target/release/custodia; build it first with
#        cargo build --release --locked --bin custodia)
#
# Needs root (debootstrap, chroot; sudo is used when not root), debootstrap, and Debian's mirror. Slow the first
# time (the root is made once and cached in $CUSTODIA_IMAGE_CHECK_DIR, default /var/tmp/custodia-image-check);
# each run then works on a copy of it. Not part of ./x test.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$repo/target/release/custodia}
cache=${CUSTODIA_IMAGE_CHECK_DIR:-/var/tmp/custodia-image-check}
mirror=${CUSTODIA_IMAGE_CHECK_MIRROR:-http://deb.debian.org/debian}

say() { printf '[image-check] %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "needs root, or sudo"
  exec sudo --preserve-env=CUSTODIA_IMAGE_CHECK_DIR,CUSTODIA_IMAGE_CHECK_MIRROR "$0" "$@"
fi
command -v debootstrap >/dev/null || die "needs debootstrap (apt-get install debootstrap)"
[ -x "$binary" ] || die "no binary at $binary: cargo build --release --locked --bin custodia"

# The runtime stage's packages, read from the Dockerfile itself: the `apt-get install` after the last FROM.
packages=$(awk '/^FROM /{runtime = ($0 !~ / AS /)} runtime' "$repo/deploy/Dockerfile" |
  grep -o 'apt-get install[^&]*' | sed 's/apt-get install//' | tr ' ' '\n' | grep -v -e '^-' -e '^\\$' | xargs)
[ -n "$packages" ] || die "found no apt-get install in the Dockerfile's runtime stage"
say "the Dockerfile's runtime packages: $packages"

if [ ! -f "$cache/base/etc/debian_version" ]; then
  say "making a minimal bookworm root in $cache/base (once)"
  rm -rf "$cache/base.new"
  mkdir -p "$cache"
  debootstrap --variant=minbase bookworm "$cache/base.new" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log"; die "debootstrap failed"; }
  mv "$cache/base.new" "$cache/base"
fi

root=$(mktemp -d "$cache/run.XXXXXX")
cleanup() {
  for mounted in "$root/proc" "$root/dev"; do
    mountpoint -q "$mounted" && umount -l "$mounted"
  done
  rm -rf "$root"
}
trap cleanup EXIT
cp -a "$cache/base/." "$root/"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root "$@"; }

say "installing them with --no-install-recommends, as the Dockerfile does"
# shellcheck disable=SC2086
in_root sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages" \
  >"$cache/apt.log" 2>&1 || { tail -20 "$cache/apt.log"; die "apt-get install failed"; }
cp "$binary" "$root/usr/local/bin/custodia"

status=0
linked=$(in_root ldd /usr/local/bin/custodia)
printf '%s\n' "$linked" | sed 's/^/  /'
if grep -q 'not found' <<<"$linked"; then
  say "FAILED: libraries not found: $(grep 'not found' <<<"$linked" | awk '{print $1}' | xargs)"
  status=1
fi
if in_root /usr/local/bin/custodia --help >/dev/null; then
  say "custodia --help runs"
else
  say "FAILED: custodia --help"
  status=1
fi
if vkey=$(in_root sh -c 'cd /tmp && CUSTODIA_DATA_DIR=/tmp/data custodia keygen 2>/dev/null'); then
  say "custodia keygen runs: $vkey"
else
  say "FAILED: custodia keygen"
  status=1
fi
[ "$status" -eq 0 ] && say "ok: the runtime stage's packages are all the binary needs to start"
exit "$status"
