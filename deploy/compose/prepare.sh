#!/bin/sh
# prepare (deploy/compose.yaml): the one step that runs as root, with only the capabilities to read the secret
# files and hand them over (CHOWN, DAC_OVERRIDE, FOWNER), before anything else starts. Compose mounts a secret
# file as the host has it (its owner and mode), so the services that run as users of their own could not read it
# there. Run again, it changes nothing, and it never replaces the log's key.
#  - The gateways' shared keys directory (the keys volume, mounted at CUSTODIA_DATA_DIR/keys in both): owned by
#    the gateway's user (10001), mode 0700, with the log's signing key from the gateway-key secret (mode 0600).
#    The gateways make the others there on first start (witness, partner requests, device cookies) and the first
#    administrator's password file, once for both.
#  - garage's volumes: owned by garage's user (10002); Caddy's (its certificates and their keys, its
#    configuration's autosave): owned by the proxy's user (10004), which could not write them as the image made them.
#  - coturn's configuration: deploy/compose/turnserver.conf with the realm and the shared secret added, and its TLS
#    certificate and key, readable by coturn's user (nobody, 65534) only.
set -eu

: "${TURN_HOST:?}" "${TURN_SECRET:?}"
gateway=10001:10001
garage=10002:10002
proxy=10004:10004
coturn=65534:65534

keys=/volumes/keys
chown "$gateway" "$keys"
chmod 0700 "$keys"
if [ -e "$keys/gateway.key" ]; then
  if ! cmp -s /run/secrets/gateway-key "$keys/gateway.key"; then
    echo "prepare: the keys volume holds another gateway.key than the gateway-key secret: a log's key never" \
      "changes; restore the secret file from the volume's key, or start a new log in new volumes" >&2
    exit 1
  fi
else
  install -o 10001 -g 10001 -m 0600 /run/secrets/gateway-key "$keys/.gateway.key.new"
  mv "$keys/.gateway.key.new" "$keys/gateway.key"
fi

for volume in /volumes/garage-meta /volumes/garage-data; do
  chown "$garage" "$volume"
  chmod 0700 "$volume"
done
for volume in /volumes/caddy-data /volumes/caddy-config; do
  chown -R "$proxy" "$volume"
  chmod 0700 "$volume"
done

turn=/volumes/turn
umask 077
{
  cat /templates/turnserver.conf
  printf '\n# Added by prepare.sh from compose.env.\nrealm=%s\nstatic-auth-secret=%s\n' "$TURN_HOST" "$TURN_SECRET"
  if [ -n "${TURN_EXTERNAL_IP:-}" ]; then
    printf 'external-ip=%s\n' "$TURN_EXTERNAL_IP"
  fi
} >"$turn/.turnserver.conf.new"
install -m 0400 /run/secrets/turn-cert "$turn/.fullchain.pem.new"
install -m 0400 /run/secrets/turn-key "$turn/.privkey.pem.new"
for file in turnserver.conf fullchain.pem privkey.pem; do
  chown "$coturn" "$turn/.$file.new"
  mv "$turn/.$file.new" "$turn/$file"
done
chown "$coturn" "$turn"
chmod 0500 "$turn"
echo "prepare: keys, garage's and Caddy's volumes and coturn's configuration are in place"
