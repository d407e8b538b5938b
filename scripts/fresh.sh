#!/usr/bin/env bash
# ./x fresh: the README's two commands on a clean Debian 12, as an engineer who has just cloned the repository has it.
#
# 1. A minimal Debian 12 root (debootstrap --variant=minbase bookworm) with the Rust toolchain as the official
#    rust:slim image has it: ca-certificates, gcc and libc6-dev from Debian, rustup and this machine's toolchain in
#    /usr/local/rustup and /usr/local/cargo. It is made once and cached in $CUSTODIA_FRESH_DIR/base (default
#    /var/tmp/custodia-fresh); it is made again when the toolchain here changes, or when the folder is deleted.
# 2. Each run starts from a pristine copy of it (an overlay, so the cached root stays untouched) and git-clones the
#    committed HEAD into /src/custodia: nothing beside the clone (no ../shared), no packages or node from this machine.
# 3. With chroot, in its own mount and PID namespaces: `./x run` in the background until /healthz and / answer over
#    HTTP, then stopped; then `./x test` (arguments after `./x fresh` go to it, e.g. `./x fresh --no-fail-fast`).
#    Mounted is only what a container has: /proc, /sys (read-only), /dev with its usual devices, /dev/pts, /dev/shm;
#    /tmp is the root's own. /etc/resolv.conf is copied in, and this network's own CA certificates where it has
#    any, so that apt, cargo, npm and pip reach their registries.
#
# CUSTODIA_FRESH_ONLY=run or =test runs just that one of the two commands (to prove one again after a change that
# cannot touch the other); the summary then says which was skipped.
#
# Needs root, debootstrap and git. The whole run is logged to target/fresh/fresh-<time>.log. When it ends, every
# process it started is gone and nothing stays mounted; CUSTODIA_FRESH_KEEP=1 keeps the run's files (the overlay's
# upper layer) to look into. Exits non-zero when either command failed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${CUSTODIA_FRESH_DIR:-/var/tmp/custodia-fresh}
mirror=${CUSTODIA_FRESH_MIRROR:-http://deb.debian.org/debian}
# How long `./x run` may take to build and answer (a release build from nothing on a busy 2-core machine).
run_budget_s=${CUSTODIA_FRESH_RUN_BUDGET_S:-7200}
only=${CUSTODIA_FRESH_ONLY:-}
case "$only" in "" | run | test) ;; *) echo "CUSTODIA_FRESH_ONLY must be run or test" >&2; exit 2 ;; esac

say() { printf '[fresh %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { say "$*" >&2; exit 1; }

if [ "${1:-}" = --inside ]; then
  inside=1
  shift
else
  inside=0
fi

# --- Outside: the cached base root, the log, then the rest in fresh namespaces. --------------------------------------
if [ "$inside" -eq 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mounts, chroot)"
  for tool in debootstrap git unshare chroot curl rustup; do
    command -v "$tool" >/dev/null || die "needs $tool on this machine (apt-get install debootstrap; rustup from rustup.rs)"
  done
  toolchain=$(cd "$repo" && rustup show active-toolchain | cut -d' ' -f1)
  toolchain_dir=$(cd "$repo" && rustup run "$toolchain" rustc --print sysroot)
  rustup_bin=$(command -v rustup)
  stamp="bookworm minbase, ca-certificates gcc libc6-dev, rustup toolchain $toolchain: $(rustup run "$toolchain" rustc --version)"
  mkdir -p "$cache" "$repo/target/fresh"
  log="$repo/target/fresh/fresh-$(date -u +%Y%m%dT%H%M%SZ).log"
  exec > >(tee "$log") 2>&1
  say "log: $log"

  if [ "$(cat "$cache/base.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "making the base root: $stamp"
    rm -rf "$cache/base.new" "$cache/base" "$cache/base.stamp"
    debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev bookworm "$cache/base.new" "$mirror" \
      >"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log"; die "debootstrap failed"; }
    # As Debian's container image has it: the release, its updates and its security archive; no package lists.
    cat >"$cache/base.new/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    rm -rf "$cache/base.new/var/lib/apt/lists/"* "$cache/base.new/var/cache/apt/archives/"*.deb
    # The Rust toolchain where rust:slim puts it, with rustup's proxies on PATH.
    mkdir -p "$cache/base.new/usr/local/rustup/toolchains" "$cache/base.new/usr/local/cargo/bin"
    cp -a "$toolchain_dir" "$cache/base.new/usr/local/rustup/toolchains/$toolchain"
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$toolchain" \
      >"$cache/base.new/usr/local/rustup/settings.toml"
    cp "$rustup_bin" "$cache/base.new/usr/local/cargo/bin/rustup"
    for proxy in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
      ln -s rustup "$cache/base.new/usr/local/cargo/bin/$proxy"
    done
    mv "$cache/base.new" "$cache/base"
    echo "$stamp" >"$cache/base.stamp"
  fi
  say "base root: $(cat "$cache/base.stamp")"

  rm -rf "$cache/run"
  mkdir -p "$cache/run/upper" "$cache/run/work" "$cache/run/root"
  commit=$(git -C "$repo" rev-parse HEAD)
  say "testing commit $commit$(git -C "$repo" diff --quiet HEAD || echo ' (uncommitted changes here are not part of it)')"
  status=0
  unshare --mount --pid --fork --propagation private -- "$0" --inside "$cache" "$repo" "$commit" "$@" || status=$?
  if [ "${CUSTODIA_FRESH_KEEP:-}" = 1 ]; then
    say "kept the run's files in $cache/run/upper"
  else
    rm -rf "$cache/run"
  fi
  say "log: $log"
  exit "$status"
fi

# --- Inside a private mount namespace, as PID 1 of a new PID namespace: everything below ends with it. --------------
cache=$1 repo=$2 commit=$3
shift 3
root=$cache/run/root

mount -t overlay overlay -o "lowerdir=$cache/base,upperdir=$cache/run/upper,workdir=$cache/run/work" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=755,nosuid,size=65536k dev "$root/dev"
for node in null zero full random urandom tty; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev,size=2g shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
chmod 1777 "$root/tmp"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Where this machine's network passes HTTPS through a proxy of its own, the certificates it adds for that (and the
# variables that point tools at them) go in too, as they would on any machine of this network.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
network_env=()
for name in SSL_CERT_FILE SSL_CERT_DIR NODE_EXTRA_CA_CERTS CURL_CA_BUNDLE REQUESTS_CA_BUNDLE PIP_CERT GIT_SSL_CAINFO; do
  if [ -n "${!name:-}" ] && [ -e "$root${!name}" ]; then
    network_env+=("$name=${!name}")
  fi
done
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"

mkdir -p "$root/src/custodia"
git -C "$root/src/custodia" init --quiet
git -C "$root/src/custodia" fetch --quiet --depth=1 "$repo" "$commit"
git -C "$root/src/custodia" checkout --quiet FETCH_HEAD
say "cloned $commit into /src/custodia; nothing else is beside it: $(ls "$root/src")"

# As the rust:slim image's environment: root, rustup's paths, no terminal. Like most CI, no incremental builds and
# only line tables for debug builds: neither changes what is built or tested, and together they halve the disk the
# build takes and much of its link time on a shared machine.
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root USER=root PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=line-tables-only CARGO_PROFILE_TEST_DEBUG=line-tables-only \
    "${network_env[@]}" "$@"
}
say "in the root: $(in_root sh -c '. /etc/os-release; echo "$PRETTY_NAME"'), $(in_root rustc --version)," \
  "node: $(in_root sh -c 'command -v node || echo none')"

# A port that nothing here listens on, for `./x run` (the root shares this machine's network).
port=18080
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done

run_ok=0
run_step() {
say "./x run (CUSTODIA_LISTEN=127.0.0.1:$port), in the background"
in_root CUSTODIA_LISTEN="127.0.0.1:$port" sh -c 'cd /src/custodia && exec ./x run' &
run_pid=$!
started=$SECONDS
while kill -0 "$run_pid" 2>/dev/null && [ $((SECONDS - started)) -lt "$run_budget_s" ]; do
  if health=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/healthz" 2>/dev/null); then
    say "/healthz answered after $((SECONDS - started)) s: $health"
    if page=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/"); then
      say "/ answered: $(printf '%s' "$page" | grep -o '<title[^>]*>[^<]*</title>' | head -1)"
      run_ok=1
    else
      say "/ did not answer"
    fi
    break
  fi
  sleep 5
done
if kill -0 "$run_pid" 2>/dev/null; then
  [ "$run_ok" -eq 1 ] || say "./x run did not answer within $run_budget_s s"
  kill -TERM "$run_pid"
  wait "$run_pid" || true
  say "./x run stopped"
else
  wait "$run_pid" || say "./x run exited with status $?"
fi
}

test_ok=0
test_step() {
say "./x test $*"
test_started=$SECONDS
if in_root sh -c 'cd /src/custodia && exec ./x test "$@"' x-test "$@"; then
  test_ok=1
fi
say "./x test: $([ "$test_ok" -eq 1 ] && echo passed || echo FAILED) after $((SECONDS - test_started)) s"
}

if [ "$only" = test ]; then run_ok=skipped; else run_step; fi
if [ "$only" = run ]; then test_ok=skipped; else test_step "$@"; fi
say "./x run: $(case $run_ok in 1) echo 'served /healthz and /' ;; skipped) echo 'skipped (CUSTODIA_FRESH_ONLY=test)' ;; *) echo FAILED ;; esac)"
say "./x test: $(case $test_ok in 1) echo passed ;; skipped) echo 'skipped (CUSTODIA_FRESH_ONLY=run)' ;; *) echo FAILED ;; esac)"
[ "$run_ok" != 0 ] && [ "$test_ok" != 0 ]
