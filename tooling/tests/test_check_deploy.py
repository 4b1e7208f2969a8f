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


def test_misspelled_field_is_refused(kube: Path) -> None:
    edit(kube / "deployment.yaml", "readinessProbe:", "readinesProbe:")
    problems = cd.check_kubernetes(kube, None)
    assert any("'readinesProbe' was unexpected" in p for p in problems), problems


def test_wrong_type_is_refused(kube: Path) -> None:
    edit(kube / "pdb.yaml", "maxUnavailable: 1", "maxUnavailable: [1]")
    problems = cd.check_kubernetes(kube, None)
    assert any("PodDisruptionBudget/prism-proxy" in p and "maxUnavailable" in p for p in problems), problems


def test_sidecar_on_another_port_is_refused(kube: Path) -> None:
    edit(kube / "deployment.yaml", '"127.0.0.1:7402"', '"127.0.0.1:7409"')
    problems = cd.check_kubernetes(kube, None)
    assert any("plugins.redis.address 127.0.0.1:7402: no plugin container listens there" in p for p in problems)
    assert any("plugin-redis listens on 127.0.0.1:7409" in p for p in problems), problems


def test_sidecar_off_loopback_is_refused(kube: Path) -> None:
    edit(kube / "deployment.yaml", '"127.0.0.1:7403"', '"0.0.0.0:7403"')
    problems = cd.check_kubernetes(kube, None)
    assert any("plugin-nats listens on 0.0.0.0:7403: off loopback" in p for p in problems), problems


def test_password_variable_not_set_is_refused(kube: Path) -> None:
    edit(kube / "deployment.yaml", "name: PRISM_REDIS_PASSWORD", "name: PRISM_REDIS_PASSWD")
    problems = cd.check_kubernetes(kube, None)
    assert any("password_env: PRISM_REDIS_PASSWORD is not set in plugin-redis" in p for p in problems), problems


def test_service_port_not_in_pod_is_refused(kube: Path) -> None:
    edit(kube / "service.yaml", "targetPort: admin", "targetPort: metrics")
    problems = cd.check_kubernetes(kube, None)
    assert any("targetPort metrics is not a port" in p for p in problems), problems


def test_unknown_secret_is_refused(kube: Path) -> None:
    edit(kube / "deployment.yaml", "name: prism-backends", "name: prism-backend")
    problems = cd.check_kubernetes(kube, None)
    assert any("uses Secret prism-backend," in p for p in problems), problems


def test_kustomization_feature_not_rendered_is_refused(kube: Path) -> None:
    with (kube / "kustomization.yaml").open("a", encoding="utf-8") as f:
        f.write("patches:\n  - path: patch.yaml\n")
    problems = cd.check_kubernetes(kube, None)
    assert any("patches: check_deploy.py does not render this" in p for p in problems), problems


def test_compose_schema_violation_is_refused(compose: Path) -> None:
    edit(compose, "  restart: unless-stopped\n", "  restart: unless-stopped\n  restarts: 3\n")
    problems = cd.check_compose(compose, None)
    assert any("Compose Specification schema" in p and "restarts" in p for p in problems), problems


def test_compose_plugin_not_a_service_is_refused(compose: Path) -> None:
    edit(compose.parent / "prism.yaml", "address: plugin-redis:7400", "address: redis-plugin:7400")
    problems = cd.check_compose(compose, None)
    assert any("plugins.redis.address redis-plugin:7400: no plugin container listens there" in p for p in problems)


def test_compose_missing_dockerfile_is_refused(compose: Path) -> None:
    edit(compose, "dockerfile: patterns/redis/Dockerfile", "dockerfile: patterns/rediss/Dockerfile")
    problems = cd.check_compose(compose, None)
    assert any("services.plugin-redis.build: no Dockerfile" in p for p in problems), problems
