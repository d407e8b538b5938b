#!/usr/bin/env bash
# Installs the Debian packages that `./x run`, `./x test` or `./x bench` needs, and nothing when they are all there.
# Usage: scripts/setup-system.sh run|test|bench
# The package lists are scripts/run-packages.txt (needed to run), scripts/test-packages.txt (needed to test, on top
# of the run packages) and scripts/bench-packages.txt (the benchmarks' peers, on top of both): one package per line,
# '#' starts a comment.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

lists=("$here/run-packages.txt")
case "${1:-}" in
  run) ;;
  test) lists+=("$here/test-packages.txt") ;;
  bench) lists+=("$here/test-packages.txt" "$here/bench-packages.txt") ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac

wanted=$(cat "${lists[@]}" 2>/dev/null | sed -e 's/#.*//' -e 's/[[:space:]]//g' | grep -v '^$' | sort -u || true)
# Installed packages, and what they provide: NodeSource's nodejs provides (and conflicts with) Debian's npm, so
# asking apt for npm there would replace node.
present=$(dpkg-query -W -f='${db:Status-Abbrev}|${Package}|${Provides}\n' 2>/dev/null | awk -F'|' '$1 ~ /^ii/ {
  print $2; n = split($3, provided, /, */); for (i = 1; i <= n; i++) { sub(/ .*/, "", provided[i]); print provided[i] } }')
missing=()
for pkg in $wanted; do
  if ! grep -qxF "$pkg" <<<"$present"; then
    missing+=("$pkg")
  fi
done
install_python_requirements() {
  # Python test tools (the Library of Congress bagit validator, aiortc, schemathesis), from PyPI, for the current
  # user.
  local requirements="$here/../tests/requirements.txt"
  [ "${1:-}" != run ] && [ -f "$requirements" ] || return 0
  # Quiet and offline when the pinned versions are already installed.
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages -r "$requirements" >&2
}

if [ ${#missing[@]} -eq 0 ]; then
  install_python_requirements "${1:-}"
  exit 0
fi

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
install_python_requirements "${1:-}"
