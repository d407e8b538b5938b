#!/bin/sh
# garage-init (deploy/compose.yaml): lays out the one garage node, imports the gateways' access key and makes their
# bucket, with the garage CLI steps the tests use (tests/src/garage.rs); run again, it changes nothing. It runs in
# garage's network namespace with garage's configuration and (read-only) metadata, as the tests' CLI does on
# loopback. Needs GARAGE_RPC_SECRET, S3_KEY_ID (GK and 24 hex digits), S3_SECRET_KEY (64 hex digits),
# S3_BUCKET and GARAGE_CAPACITY; garage's configuration is GARAGE_CONFIG_FILE (by default /etc/garage.toml).
set -eu

: "${S3_KEY_ID:?}" "${S3_SECRET_KEY:?}" "${S3_BUCKET:?}" "${GARAGE_CAPACITY:?}"
key_name=custodia

# The server answers `status` once it listens; give it a minute.
tries=0
until garage status >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    garage status # says why
    exit 1
  fi
  sleep 1
done

if garage layout show | grep -q '^Current cluster layout version: 0$'; then
  node=$(garage node id -q | cut -d@ -f1)
  garage layout assign -z dc1 -c "$GARAGE_CAPACITY" "$node"
  garage layout apply --version 1
fi

if ! garage key info "$S3_KEY_ID" >/dev/null 2>&1; then
  garage key import --yes -n "$key_name" "$S3_KEY_ID" "$S3_SECRET_KEY" >/dev/null
fi
if ! garage bucket info "$S3_BUCKET" >/dev/null 2>&1; then
  garage bucket create "$S3_BUCKET"
fi
garage bucket allow --read --write --owner "$S3_BUCKET" --key "$S3_KEY_ID"
echo "garage-init: node laid out, key $S3_KEY_ID allowed on bucket $S3_BUCKET"
