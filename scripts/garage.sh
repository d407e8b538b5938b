#!/usr/bin/env bash
# Builds garage, the S3-compatible object store the tests run on loopback (an S3 server none of us wrote), once,
# into the user's cache, and prints the binary's path. Usage: scripts/garage.sh
# garage 2.5.0 from crates.io (AGPL-3.0; run as a separate program, never linked), with only the SQLite metadata
# engine and its bundled C libraries: the build takes about 15 minutes on two cores the first time, nothing after.
set -euo pipefail
version=2.5.0
root="${XDG_CACHE_HOME:-$HOME/.cache}/custodia/garage-$version"
binary="$root/bin/garage"
if [ ! -x "$binary" ]; then
  echo "setup: building garage $version into $root (once)" >&2
  cargo install garage --version "$version" --locked --quiet --no-default-features --features bundled-libs,sqlite \
    --root "$root" >&2
fi
echo "$binary"
