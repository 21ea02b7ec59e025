"""The deploy kit validates: Kubernetes manifests, compose file, systemd unit, and the config they carry.

No cluster or Docker engine runs here, so each file is checked by the tool
that knows its schema: kubernetes-validate (--strict: no unknown fields),
check-jsonschema with the compose-spec schema, and systemd-analyze verify.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aggregator.config import parse_config_text

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


def test_kubernetes_manifests_validate() -> None:
    done = run(str(BIN / "kubernetes-validate"), "--strict", str(DEPLOY / "kubernetes.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text())}
    assert {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    } <= kinds


def test_the_manifest_carries_a_valid_config_and_what_operators_need() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    config = parse_config_text(config_map["data"]["aggregator.toml"], environ=secret["stringData"])
    assert config.cache.redis_url and config.server.replicas_hint == 3
    app = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ilos-aggregator")
    assert app["spec"]["replicas"] == 3
    pod = app["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]
    redis = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ilos-aggregator-redis"
    )
    assert "noeviction" in redis["spec"]["template"]["spec"]["containers"][0]["args"]


def test_compose_file_validates() -> None:
    done = run(
        str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert all("healthcheck" in service for service in compose["services"].values())
    assert "noeviction" in compose["services"]["redis"]["command"]


def test_systemd_unit_verifies(tmp_path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = (DEPLOY / "ilos-aggregator.service").read_text()
    assert "LimitNOFILE=" in unit and "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
    # verify checks that ExecStart's program exists: point it at this checkout's install.
    local = tmp_path / "ilos-aggregator.service"
    local.write_text(
        unit.replace("/opt/ilos-aggregator/.venv/bin/ilos-aggregator", str(BIN / "ilos-aggregator"))
    )
    done = run(analyze, "verify", str(local))
    assert done.returncode == 0, done.stdout + done.stderr
