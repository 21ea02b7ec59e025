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
    assert "redis.conf" in " ".join(compose["services"]["redis"]["command"])


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


def test_the_kits_redis_settings_persist() -> None:
    conf = (DEPLOY / "redis.conf").read_text()
    assert (
        "appendonly yes" in conf and "appendfsync everysec" in conf and "maxmemory-policy noeviction" in conf
    )
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in compose["services"]["redis"]["volumes"]
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    redis_pod = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "ilos-aggregator-redis"
    )["spec"]["template"]["spec"]
    args = " ".join(redis_pod["containers"][0]["args"])
    assert "--appendonly yes --appendfsync everysec" in args and "--dir /data" in args
    assert redis_pod["volumes"][0]["persistentVolumeClaim"]
    assert (
        "include /opt/ilos-aggregator/deploy/redis.conf" in (DEPLOY / "ilos-aggregator.service").read_text()
    )


async def test_a_restarted_redis_of_the_kit_keeps_subscriptions_and_validators(
    aiohttp_client, sim, clock, tmp_path
) -> None:
    """Redis stopped (as a rollout or a host restart stops it) and started again on its append-only
    file: the feed is still a subscription and its ETag still answers 304 (without persistence,
    as the kit ran Redis before: 0 subscriptions and a 200)."""
    import time

    import redis as redis_py

    from aggregator.web.app import create_app
    from aggregator.web.state import SERVICES
    from tests.conftest import free_port, make_config

    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    port = free_port()

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                binary,
                str(DEPLOY / "redis.conf"),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                if redis_py.Redis(port=port).ping():
                    return proc
            except redis_py.RedisError:
                pass
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    proc = start()
    try:
        config = make_config(sim, cache={"redis_url": f"redis://127.0.0.1:{port}/0"})
        app = create_app(config, clock=clock, refresh_every=None)
        client = await aiohttp_client(app)
        url = "/search.atom?q=onboarding"
        for _ in range(2):  # a URL fetched again within a day is a subscription
            resp = await client.get(url)
            etag = resp.headers["ETag"]
        await app[SERVICES].subscriptions.flush()  # the polls tallied so far, written out now
        assert await app[SERVICES].subscriptions.count() == 1
        proc.terminate()  # Redis writes its append-only file out as it stops
        proc.wait(10)
        proc = start()
        app[SERVICES].pages.drop_all()  # this process's own copy of the page goes too
        assert await app[SERVICES].subscriptions.count() == 1
        again = await client.get(url, headers={"If-None-Match": etag})
        assert again.status == 304
    finally:
        proc.kill()
        proc.wait(10)
