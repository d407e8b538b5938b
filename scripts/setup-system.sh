#!/usr/bin/env bash
# Installs the Debian packages that `./x run` or `./x test` needs, and nothing when they are all there.
# Usage: scripts/setup-system.sh run|test
# The package lists are scripts/run-packages.txt (needed to run) and scripts/test-packages.txt (needed to test,
# on top of the run packages): one package per line, '#' starts a comment.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

lists=("$here/run-packages.txt")
case "${1:-}" in
  run) ;;
  test) lists+=("$here/test-packages.txt") ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

wanted=$(cat "${lists[@]}" 2>/dev/null | sed -e 's/#.*//' -e 's/[[:space:]]//g' | grep -v '^$' | sort -u || true)
missing=()
for pkg in $wanted; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "setup: these Debian packages are missing and there is no apt-get to install them: ${missing[*]}" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
