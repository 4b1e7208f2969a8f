"""Tests of tooling/check_deploy.py: the shipped deployment files pass, and broken copies of them fail.

These run without prism-proxy (`proxy=None`); .ci/run runs the whole check, `--check` included.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import check_deploy as cd  # noqa: E402


@pytest.fixture
def kube(tmp_path: Path) -> Path:
    """A copy of proxy/deploy/kubernetes to break."""
    return Path(shutil.copytree(cd.KUBERNETES, tmp_path / "kubernetes"))


@pytest.fixture
def compose(tmp_path: Path) -> Path:
    """A copy of proxy/deploy/compose, at the same depth below a root holding the Dockerfiles it builds."""
    root = tmp_path / "repo"
    for dockerfile in ("proxy/Dockerfile", "patterns/postgres/Dockerfile", "patterns/redis/Dockerfile"):
        (root / dockerfile).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cd.ROOT / dockerfile, root / dockerfile)
    shutil.copytree(cd.COMPOSE.parent, root / "proxy/deploy/compose")
    return root / "proxy/deploy/compose/compose.yaml"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_shipped_files_pass() -> None:
    assert cd.check_kubernetes(cd.KUBERNETES, None) == []
    assert cd.check_compose(cd.COMPOSE, None) == []


# (file, text, replacement, a problem must contain this)
KUBERNETES_BREAKS = {
    "misspelled field": ("deployment.yaml", "readinessProbe:", "readinesProbe:", "'readinesProbe' was unexpected"),
    "wrong type": ("pdb.yaml", "maxUnavailable: 1", "maxUnavailable: [1]", "spec.maxUnavailable: [1] is not valid"),
    "sidecar on another port": ("deployment.yaml", '"127.0.0.1:7402"', '"127.0.0.1:7409"',
                                "plugins.redis.address 127.0.0.1:7402: no plugin container listens there"),
    "sidecar off loopback": ("deployment.yaml", '"127.0.0.1:7403"', '"0.0.0.0:7403"',
                             "plugin-nats listens on 0.0.0.0:7403: off loopback"),
    "password variable not set": ("deployment.yaml", "name: PRISM_REDIS_PASSWORD", "name: PRISM_REDIS_PASSWD",
                                  "password_env: PRISM_REDIS_PASSWORD is not set in plugin-redis"),
    "service port not in the pod": ("service.yaml", "targetPort: admin", "targetPort: metrics",
                                    "targetPort metrics is not a port"),
    "unknown secret": ("deployment.yaml", "name: prism-backends", "name: prism-backend", "uses Secret prism-backend,"),
}


@pytest.mark.parametrize("case", KUBERNETES_BREAKS)
def test_kubernetes_break_is_found(kube: Path, case: str) -> None:
    file, old, new, expected = KUBERNETES_BREAKS[case]
    edit(kube / file, old, new)
    problems = cd.check_kubernetes(kube, None)
    assert any(expected in p for p in problems), problems


def test_kustomization_feature_not_rendered_is_refused(kube: Path) -> None:
    with (kube / "kustomization.yaml").open("a", encoding="utf-8") as f:
        f.write("patches:\n  - path: patch.yaml\n")
    problems = cd.check_kubernetes(kube, None)
    assert any("patches: check_deploy.py does not render this" in p for p in problems), problems


COMPOSE_BREAKS = {
    "key the specification lacks": ("compose.yaml", "  restart: unless-stopped\n",
                                    "  restart: unless-stopped\n  restarts: 3\n", "'restarts' was unexpected"),
    "plugin not a service": ("prism.yaml", "address: plugin-redis:7400", "address: redis-plugin:7400",
                             "plugins.redis.address redis-plugin:7400: no plugin container listens there"),
    "missing Dockerfile": ("compose.yaml", "dockerfile: patterns/redis/Dockerfile",
                           "dockerfile: patterns/rediss/Dockerfile", "services.plugin-redis.build: no Dockerfile"),
}


@pytest.mark.parametrize("case", COMPOSE_BREAKS)
def test_compose_break_is_found(compose: Path, case: str) -> None:
    file, old, new, expected = COMPOSE_BREAKS[case]
    edit(compose.parent / file, old, new)
    problems = cd.check_compose(compose, None)
    assert any(expected in p for p in problems), problems
