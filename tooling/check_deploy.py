#!/usr/bin/env python3
"""Check the deployment files in proxy/deploy/ without a cluster or a Docker engine.

Kubernetes (proxy/deploy/kubernetes/):

- the kustomization is rendered (resources, namespace, secret and config map
  generators, images: the parts it uses; any other key is refused, so a new
  one needs teaching here first) and every resource is validated against the
  Kubernetes JSON schemas that `kubernetes-validate` bundles, in strict mode
  (an unknown or misspelled field is an error), for the oldest Kubernetes
  version the manifests support and the newest one the package knows;
- what a schema cannot see: Services and the PodDisruptionBudget select the
  proxy pods, their ports and the probes' ports name ports of the pod, every
  Secret and ConfigMap a pod uses is rendered or is one the operator creates
  (EXTERNAL), every `address:` plugin of the proxy config is a sidecar that
  listens on that loopback port (and every sidecar is used), and the
  variables named by the plugins' `password_env`/`token_env` are set in
  their containers;
- the proxy config is taken out of the rendered Secret the pod mounts, and
  `prism-proxy --check` runs on it, with the pod's other mounts laid out in
  a temporary directory (a self-signed certificate stands in for the TLS
  Secret) and the pod's arguments.

Compose (proxy/deploy/compose/compose.yaml):

- validated against the Compose Specification schema that `check-jsonschema`
  vendors (`--builtin-schema vendor.compose-spec`);
- every build names an existing Dockerfile, every `address:` plugin of the
  proxies' config is a service listening on that port (its Dockerfile's
  `--listen`), and `prism-proxy --check` runs on the config with the
  proxies' arguments.

Every problem is printed; the exit status is 1 when there is any.

    uv run tooling/check_deploy.py [--proxy PATH]

`--proxy` defaults to `$CARGO_TARGET_DIR/debug/prism-proxy` (else
`target/debug/prism-proxy`); build it first (`cargo build --bins`).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "proxy/deploy/kubernetes"
COMPOSE = ROOT / "proxy/deploy/compose/compose.yaml"

# Native sidecars (init containers with restartPolicy: Always) are on by
# default from Kubernetes 1.29.
OLDEST_KUBERNETES = "1.29"

# Secrets the operator creates (kustomization.yaml lists them), by name: their type.
EXTERNAL = {"prism-proxy-tls": "kubernetes.io/tls", "prism-backends": "Opaque"}

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "secretGenerator", "configMapGenerator", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "PriorityClass", "CustomResourceDefinition"}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}


def show(path: Path) -> str:
    """A path as messages name it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------
# Kustomize, the parts the manifests use
# ---------------------------------------------------------------------------


def render_kustomization(directory: Path) -> tuple[list[dict], list[str]]:
    """The resources `kubectl kustomize DIRECTORY` makes, except that generated
    names get no hash suffix (so references need no rewriting)."""
    problems: list[str] = []
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in sorted(set(kustomization) - KUSTOMIZATION_KEYS):
        problems.append(f"{show(path)}: {key}: check_deploy.py does not render this; teach it first")
    resources: list[dict] = []
    for name in kustomization.get("resources", []):
        source = directory / name
        if not source.is_file():
            problems.append(f"{show(path)}: resources: {name} is not a file of {show(directory)}")
            continue
        for doc in yaml.safe_load_all(source.read_text(encoding="utf-8")):
            if doc is not None:
                doc.setdefault("metadata", {})
                doc["metadata"].setdefault("annotations", {})["check-deploy/source"] = name
                resources.append(doc)
    for kind, key in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for generator in kustomization.get(key, []):
            data: dict[str, str] = {}
            for entry in generator.get("files", []):
                name, _, file = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
                source = directory / file
                if not source.is_file():
                    problems.append(f"{show(path)}: {key}: {file} is not a file")
                    continue
                data[name] = source.read_text(encoding="utf-8")
            for literal in generator.get("literals", []):
                name, _, value = literal.partition("=")
                data[name] = value
            resource = {"apiVersion": "v1", "kind": kind,
                        "metadata": {"name": generator["name"], "annotations": {"check-deploy/source": key}}}
            if kind == "Secret":
                resource["type"] = generator.get("type", "Opaque")
                resource["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
            else:
                resource["data"] = data
            resources.append(resource)
    if "namespace" in kustomization:
        for resource in resources:
            if resource.get("kind") not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for resource in resources:
        for container in containers(resource):
            name, _, tag = container.get("image", "").partition(":")
            if name in images:
                image = images[name]
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    return resources, problems


def pod_spec(resource: dict) -> dict | None:
    spec = resource.get("spec") or {}
    if resource.get("kind") == "Pod":
        return spec
    template = spec.get("template") or {}
    return template.get("spec") if isinstance(template, dict) else None


def containers(resource: dict) -> list[dict]:
    spec = pod_spec(resource) or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def label(resource: dict) -> str:
    meta = resource.get("metadata", {})
    return f"{meta.get('annotations', {}).get('check-deploy/source', '?')}: {resource.get('kind')}/{meta.get('name')}"


# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------


def check_schemas(resources: list[dict], versions: list[str]) -> list[str]:
    """Each resource against the Kubernetes schemas, strict (no unknown fields)."""
    problems: list[str] = []
    for resource in resources:
        clean = strip_annotation(resource)
        for version in versions:
            try:
                kubernetes_validate.validate(clean, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path) or "(top)"
                problems.append(f"{label(resource)}: Kubernetes {version}: {where}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{label(resource)}: Kubernetes {version}: {e.message}")
    return problems


def strip_annotation(resource: dict) -> dict:
    meta = dict(resource["metadata"])
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if not k.startswith("check-deploy/")}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return {**resource, "metadata": meta}


# ---------------------------------------------------------------------------
# What the schemas cannot see
# ---------------------------------------------------------------------------


def check_references(resources: list[dict]) -> list[str]:
    """Selectors, ports, Secret and ConfigMap references."""
    problems: list[str] = []
    workloads = [r for r in resources if pod_spec(r) is not None]
    rendered = {(r["kind"], r["metadata"]["name"]) for r in resources if r.get("kind") in ("Secret", "ConfigMap")}

    def pods_selected(selector: dict) -> list[dict]:
        return [w for w in workloads
                if selector and selector.items() <= w["spec"]["template"]["metadata"].get("labels", {}).items()]

    def port_names(workload: dict) -> dict[str, int]:
        return {p["name"]: p["containerPort"] for c in containers(workload) for p in c.get("ports", []) if "name" in p}

    for workload in workloads:
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        if selector and not pods_selected(selector):
            problems.append(f"{label(workload)}: spec.selector does not match the pod template's labels")
        names = port_names(workload)
        for container in containers(workload):
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in names:
                    problems.append(f"{label(workload)}: {container['name']}.{probe}: no port named {port}")
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {})
                for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if key in ref:
                        problems += missing(label(workload), kind, ref[key]["name"], rendered)
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                problems += missing(label(workload), "Secret", volume["secret"]["secretName"], rendered)
            if "configMap" in volume:
                problems += missing(label(workload), "ConfigMap", volume["configMap"]["name"], rendered)
    for resource in resources:
        if resource.get("kind") == "Service":
            selected = pods_selected(resource["spec"].get("selector", {}))
            if not selected:
                problems.append(f"{label(resource)}: its selector matches no pod")
            for port in resource["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                for workload in selected:
                    known = port_names(workload)
                    if target not in (known if isinstance(target, str) else known.values()):
                        problems.append(f"{label(resource)}: port {port.get('name')}: "
                                        f"targetPort {target} is not a port of {label(workload)}")
        if resource.get("kind") == "PodDisruptionBudget" and not pods_selected(
            resource["spec"].get("selector", {}).get("matchLabels", {})
        ):
            problems.append(f"{label(resource)}: its selector matches no pod")
    return problems


def missing(where: str, kind: str, name: str, rendered: set[tuple[str, str]]) -> list[str]:
    if (kind, name) in rendered or (kind == "Secret" and name in EXTERNAL):
        return []
    return [f"{where}: uses {kind} {name}, which is neither rendered nor one the operator creates (EXTERNAL)"]


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in a command line."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def host_port(address: str) -> tuple[str, int]:
    """`host:port` split; port -1 when there is none."""
    host, _, port = address.rpartition(":")
    return host, int(port) if port.isdigit() else -1


def check_plugins(where: str, config: dict, listeners: dict[tuple[str, int], dict]) -> list[str]:
    """Every plugin of `config` is reached by `address:` at one of `listeners`
    ((host, port) -> {"name", "env"}), whose environment has the variables its
    config names; every listener is used."""
    problems: list[str] = []
    used: set[tuple[str, int]] = set()
    for name, plugin in (config.get("plugins") or {}).items():
        if "command" in plugin:
            problems.append(f"{where}: plugins.{name}: a command plugin cannot run in the proxy image; use address:")
            continue
        key = host_port(str(plugin.get("address", ":0")))
        if key not in listeners:
            problems.append(f"{where}: plugins.{name}.address {plugin.get('address')}: no plugin container listens there")
            continue
        used.add(key)
        for setting in ("password_env", "token_env"):
            var = (plugin.get("config") or {}).get(setting)
            if var and var not in listeners[key]["env"]:
                problems.append(f"{where}: plugins.{name}.config.{setting}: {var} is not set in {listeners[key]['name']}")
    for key, listener in listeners.items():
        if key not in used:
            problems.append(f"{where}: plugin container {listener['name']} listens on {key[0]}:{key[1]}, "
                            "which no plugin entry of the proxy config uses")
    return problems


def proxy_container(workload: dict) -> dict | None:
    for container in pod_spec(workload).get("containers", []):
        if flag([*container.get("command", []), *container.get("args", [])], "--config"):
            return container
    return None


def mounted_file(workload: dict, container: dict, path: str, resources: list[dict]) -> tuple[str | None, str]:
    """The text of file `path` as the container sees it through a Secret or
    ConfigMap volume, or why it cannot be found."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        relative = os.path.relpath(path, mount["mountPath"])
        if relative.startswith(".."):
            continue
        volume = volumes.get(mount["name"], {})
        kind, name = (("Secret", volume["secret"]["secretName"]) if "secret" in volume else
                      ("ConfigMap", volume["configMap"]["name"]) if "configMap" in volume else (None, None))
        for resource in resources:
            if resource["kind"] == kind and resource["metadata"]["name"] == name:
                data = resource.get("data", {})
                if relative in data:
                    return decode(resource, relative), ""
                if relative in resource.get("stringData", {}):
                    return resource["stringData"][relative], ""
                return None, f"{kind} {name} has no key {relative}"
        return None, f"the volume mounted at {mount['mountPath']} is not a rendered Secret or ConfigMap"
    return None, f"no volume is mounted at {path}"


def decode(resource: dict, key: str) -> str:
    value = resource["data"][key]
    return base64.b64decode(value).decode() if resource["kind"] == "Secret" else value


def check_pods(resources: list[dict], proxy: Path | None) -> list[str]:
    """The proxy config each proxy pod mounts: its plugins against the
    sidecars, its ports against the pod's, and `prism-proxy --check`."""
    problems: list[str] = []
    for workload in (r for r in resources if pod_spec(r) is not None):
        container = proxy_container(workload)
        if container is None:
            continue
        where = label(workload)
        args = [*container.get("command", []), *container.get("args", [])]
        config_path = flag(args, "--config") or ""
        text, why = mounted_file(workload, container, config_path, resources)
        if text is None:
            problems.append(f"{where}: proxy --config {config_path}: {why}")
            continue
        config = yaml.safe_load(text) or {}
        where = f"{where}: {config_path}"
        listeners = {}
        for sidecar in pod_spec(workload).get("initContainers", []):
            listen = flag([*sidecar.get("command", []), *sidecar.get("args", [])], "--listen")
            if listen is None:
                continue
            host, port = host_port(listen)
            if host not in LOOPBACK:
                problems.append(f"{label(workload)}: {sidecar['name']} listens on {listen}: off loopback, anyone "
                                "in the cluster could call a plugin, whose protocol has no authentication")
            if sidecar.get("restartPolicy") != "Always":
                problems.append(f"{label(workload)}: {sidecar['name']}: a plugin sidecar needs restartPolicy: Always")
            listeners[("127.0.0.1", port)] = {"name": sidecar["name"], "env": {e["name"] for e in sidecar.get("env", [])}}
        plugins = {name: {**p, "address": normalize_loopback(p["address"])} if "address" in p else p
                   for name, p in (config.get("plugins") or {}).items()}
        problems += check_plugins(where, {**config, "plugins": plugins}, listeners)
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        for field, port_name in (("listen", "grpc"), ("admin_http.listen", "admin")):
            value = config.get("listen") if field == "listen" else (config.get("admin_http") or {}).get("listen")
            if value is None or host_port(str(value))[1] != ports.get(port_name):
                problems.append(f"{where}: {field} {value} is not on the container port named {port_name} "
                                f"({ports.get(port_name)})")
        if proxy is not None:
            problems += run_check_in_pod(proxy, workload, container, args, config_path, resources)
    return problems


def normalize_loopback(address: str) -> str:
    host, port = host_port(address)
    return f"127.0.0.1:{port}" if host in LOOPBACK else address


def run_check_in_pod(proxy: Path, workload: dict, container: dict, args: list[str], config_path: str,
                     resources: list[dict]) -> list[str]:
    """`prism-proxy ARGS --check`, with the container's mounts under a temporary root."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    with tempfile.TemporaryDirectory(prefix="prism-check-deploy-") as tmp:
        root = Path(tmp)
        mounts = sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"]))
        for mount in mounts:
            target = root / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            volume = volumes.get(mount["name"], {})
            name = (volume.get("secret") or {}).get("secretName") or (volume.get("configMap") or {}).get("name")
            for resource in resources:
                if resource["kind"] in ("Secret", "ConfigMap") and resource["metadata"]["name"] == name:
                    for key in resource.get("data", {}):
                        (target / key).write_text(decode(resource, key), encoding="utf-8")
            if EXTERNAL.get(name) == "kubernetes.io/tls":
                self_signed(target)

        def relocate(path: str) -> str:
            for mount in mounts:
                if path == mount["mountPath"] or path.startswith(mount["mountPath"].rstrip("/") + "/"):
                    return str(root / path.lstrip("/"))
            return path

        config_file = Path(relocate(config_path))
        # Paths (a value's start, not the middle of a URL) under a mount
        # point, in one pass: the temporary root may itself be under one.
        prefixes = "|".join(rf"(?<![^\s'\"\[,]){re.escape(m['mountPath'].rstrip('/') + '/')}" for m in mounts)
        text = config_file.read_text(encoding="utf-8")
        if prefixes:
            text = re.sub(prefixes, lambda m: str(root / m.group(0).lstrip("/")) + "/", text)
        config_file.write_text(text, encoding="utf-8")
        command = [str(proxy), *[relocate(a) if a == config_path else a for a in args if a != "prism-proxy"], "--check"]
        return run_check(label(workload), command)


def self_signed(directory: Path) -> None:
    """A certificate and key in the layout of a kubernetes.io/tls Secret."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prism-proxy")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("prism-proxy")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def run_check(where: str, command: list[str]) -> list[str]:
    """Runs `prism-proxy ... --check`; its error lines and a failing exit are problems."""
    print(f"  $ {shlex.join(command)}")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"{where}: prism-proxy --check: {e}"]
    for line in (done.stdout + done.stderr).splitlines():
        print(f"    {line}")
    problems = [f"{where}: prism-proxy --check: {line}" for line in done.stdout.splitlines() if line.startswith("error")]
    if done.returncode != 0:
        said = " ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        problems.append(f"{where}: prism-proxy --check exited with {done.returncode}" + (f": {said}" if said else ""))
    elif not any(line.startswith("ok    config") for line in done.stdout.splitlines()):
        problems.append(f"{where}: prism-proxy --check did not accept the config")
    return problems


def check_kubernetes(directory: Path, proxy: Path | None) -> list[str]:
    resources, problems = render_kustomization(directory)
    versions = [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]
    print(f"kubernetes: {len(resources)} resources from {show(directory)}, "
          f"Kubernetes {' and '.join(versions)}")
    problems += check_schemas(resources, versions)
    problems += check_references(resources)
    problems += check_pods(resources, proxy)
    return problems


# ---------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------


def check_compose(path: Path, proxy: Path | None) -> list[str]:
    print(f"compose: {show(path)}")
    problems: list[str] = []
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        problems.append(f"{show(path)}: not valid against the Compose Specification schema:\n"
                        + (done.stdout + done.stderr).strip())
    compose = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    services = compose.get("services") or {}
    where = str(show(path))
    listeners: dict[tuple[str, int], dict] = {}
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        build = service.get("build")
        entrypoint: list[str] = []
        if isinstance(build, dict):
            dockerfile = path.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{where}: services.{name}.build: no Dockerfile at {show(dockerfile)}")
            else:
                entrypoint = dockerfile_entrypoint(dockerfile)
        listen = flag([*entrypoint, *command_of(service)], "--listen")
        if listen:
            env = service.get("environment") or {}
            env = set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
            listeners[(name, host_port(listen)[1])] = {"name": f"service {name}", "env": env}
    proxies = {n: s for n, s in services.items() if isinstance(s, dict) and flag(command_of(s), "--config")}
    if not proxies:
        problems.append(f"{where}: no service runs the proxy (a command with --config)")
    checked: set[tuple[str, ...]] = set()
    for name, service in proxies.items():
        args = command_of(service)
        config_path = flag(args, "--config") or ""
        source = None
        for volume in service.get("volumes") or []:
            parts = volume.split(":") if isinstance(volume, str) else [volume.get("source"), volume.get("target")]
            if len(parts) >= 2 and parts[1] == config_path:
                source = (path.parent / parts[0]).resolve()
        if source is None or not source.is_file():
            problems.append(f"{where}: services.{name}: --config {config_path} is not a file mounted from the repository")
            continue
        config = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        problems += check_plugins(f"{where}: services.{name}: {show(source)}", config, listeners)
        key = (str(source), *args)
        if proxy is not None and key not in checked:
            checked.add(key)
            command = [str(proxy), *[str(source) if a == config_path else a for a in args], "--check"]
            problems += run_check(f"{where}: services.{name}", command)
    return problems


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def dockerfile_entrypoint(dockerfile: Path) -> list[str]:
    """The exec-form ENTRYPOINT of a Dockerfile's last stage."""
    entrypoint: list[str] = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*ENTRYPOINT\s+(\[.*\])\s*$", line)
        if m:
            entrypoint = [str(a) for a in yaml.safe_load(m.group(1))]
    return entrypoint


# ---------------------------------------------------------------------------


def default_proxy() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "prism-proxy"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", type=Path, default=default_proxy(), help="the prism-proxy binary to run --check with")
    args = parser.parse_args(argv)
    if not args.proxy.is_file():
        print(f"check_deploy: {args.proxy} does not exist; build it (cargo build --bins) or pass --proxy",
              file=sys.stderr)
        return 1
    problems = check_kubernetes(KUBERNETES, args.proxy) + check_compose(COMPOSE, args.proxy)
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in the deployment files")
        return 1
    print("deployment files ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
