#!/usr/bin/env python3
"""Checks deploy/k8s against itself and the gateway, without a cluster: every file parses as YAML (PyYAML,
Debian's python3-yaml), each object has the fields Kubernetes requires, the kustomization lists every file,
names and ports agree between the Deployment, Service, NetworkPolicy, ConfigMap and PVC, the probes ask
/healthz and /readyz on the API's port, the metrics port is the one CUSTODIA_METRICS_LISTEN names and the Service
does not expose it, the container runs as a non-root user without privileges, and every CUSTODIA_* setting the
manifests give is one that docs/configuration.md lists. Exits non-zero naming each problem.

crates/server/tests/operations.rs runs it; so can anyone: python3 scripts/check-deploy.py
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
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
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)

deployment, service, config = objects["Deployment"], objects["Service"], objects["ConfigMap"]
policy, claim = objects["NetworkPolicy"], objects["PersistentVolumeClaim"]
settings = config.get("data", {})
pod = deployment["spec"]["template"]
labels = pod["metadata"]["labels"]
need(deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), "the Deployment's selector misses its pods")
need(service["spec"]["selector"].items() <= labels.items(), "the Service selects no gateway pod")
need(policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), "the NetworkPolicy selects no gateway pod")
need(deployment["spec"].get("replicas") == 1, "more than one replica would sequence one log twice")
need(deployment["spec"].get("strategy", {}).get("type") == "Recreate", "a rolling update runs two gateways at once")

(container,) = pod["spec"]["containers"]
ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}


def port_of(address):
    match = re.fullmatch(r".*:(\d+)", address or "")
    return int(match.group(1)) if match else None


need(ports.get("http") == port_of(settings.get("CUSTODIA_LISTEN")), "port http is not CUSTODIA_LISTEN's")
need(ports.get("metrics") == port_of(settings.get("CUSTODIA_METRICS_LISTEN")), "port metrics is not CUSTODIA_METRICS_LISTEN's")
exposed = {port.get("targetPort") for port in service["spec"]["ports"]}
need(exposed == {"http"}, f"the Service exposes {sorted(map(str, exposed))}: only http, never metrics")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
    got = container.get(probe, {}).get("httpGet", {})
    need(got.get("path") == path and got.get("port") == "http", f"{probe} should ask {path} on port http, asks {got}")

security = {**pod["spec"].get("securityContext", {}), **container.get("securityContext", {})}
need(security.get("runAsNonRoot") is True, "runAsNonRoot is not set")
need(isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0, "runAsUser is not a non-root uid")
need(security.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
need(security.get("readOnlyRootFilesystem") is True, "the root filesystem is writable")
need(security.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not all dropped")
need(security.get("seccompProfile", {}).get("type") == "RuntimeDefault", "no RuntimeDefault seccomp profile")

mounts = {mount["name"]: mount["mountPath"] for mount in container.get("volumeMounts", [])}
need(mounts.get("data") == settings.get("CUSTODIA_DATA_DIR"), "the data volume is not mounted at CUSTODIA_DATA_DIR")
volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes", [])}
claimed = volumes.get("data", {}).get("persistentVolumeClaim", {}).get("claimName")
need(claimed == claim["metadata"]["name"], f"the data volume claims {claimed}, the PVC is {claim['metadata']['name']}")
need(container.get("envFrom", [{}])[0].get("configMapRef", {}).get("name") == config["metadata"]["name"],
     "the container does not take the ConfigMap")

reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
given = set(settings) | {env["name"] for env in container.get("env", [])}
for name in sorted(given):
    if name.startswith("CUSTODIA_"):
        need(f"`{name}`" in reference, f"{name} is not a setting docs/configuration.md lists")
for env in container.get("env", []):
    secret = env.get("valueFrom", {}).get("secretKeyRef")
    if secret:
        need(secret.get("optional") is True, f"{env['name']}: a missing Secret key would keep the pod from starting")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"deploy/k8s: {len(files)} files, {len(objects)} objects, consistent")
