"""Redis as operators run it: TLS (rediss://, with a CA made here) and a unix socket.

Each test starts its own redis-server and runs the cache suite's core cases
through it: an answer fetched once is served from Redis, identical
concurrent misses share one upstream request, the budget counts there, and
every key the service writes sits under its namespace.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from aggregator.store.held import PREFIX as BUDGET_PREFIX
from aggregator.store.keys import NAMESPACE
from aggregator.web.app import create_app
from tests.conftest import KEYS, free_port, make_config
from tests.helpers import timing

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def start_redis(*args: str, client: redis.Redis, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [REDIS or "redis-server", "--save", "", "--appendonly", "no", "--dir", str(workdir), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.ping():
                return proc
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A redis-server speaking only TLS, its certificate signed by a throwaway CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=aggregator test CA",
        cwd=tmp_path,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=tmp_path,
    )
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        cwd=tmp_path,
    )
    port = free_port()
    url = f"rediss://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, ssl_ca_certs=str(tmp_path / "ca.crt"), socket_connect_timeout=0.5)
    proc = start_redis(
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        str(tmp_path / "server.crt"),
        "--tls-key-file",
        str(tmp_path / "server.key"),
        "--tls-ca-cert-file",
        str(tmp_path / "ca.crt"),
        "--tls-auth-clients",
        "no",
        client=client,
        workdir=tmp_path,
    )
    yield url, tmp_path / "ca.crt"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[str]:
    sock = tmp_path / "redis.sock"
    url = f"unix://{sock}?db=0"
    proc = start_redis(
        "--port", "0", "--unixsocket", str(sock), client=redis.Redis.from_url(url), workdir=tmp_path
    )
    yield url
    proc.terminate()
    proc.wait(10)


async def core_cases(aiohttp_client, sim, cache: dict[str, object], direct: redis.Redis) -> None:
    client = await aiohttp_client(create_app(make_config(sim, cache=cache)))
    for org in sim.orgs:
        org.latency = 0.2
    answers = await asyncio.gather(
        *(client.get("/search.atom", params={"q": "onboarding"}) for _ in range(20))
    )
    assert {r.status for r in answers} == {200}
    assert {o: len(sim.calls(o, "search")) for o in KEYS} == dict.fromkeys(KEYS, 1)  # one per org, shared
    again = await client.get("/search.atom", params={"q": "onboarding", "count": "5"})
    assert set(timing(again).values()) == {"cached"}
    ready = await (await client.get("/readyz")).json()
    assert ready["cache"] == "redis" and ready["orgs"]["hr"]["budget_remaining"] == 59  # counted in Redis
    keys = (
        direct.keys("*", target_nodes=redis.RedisCluster.ALL_NODES)
        if isinstance(direct, redis.RedisCluster)
        else direct.keys("*")
    )
    assert keys and all(k.startswith((NAMESPACE.encode() + b":", BUDGET_PREFIX.encode())) for k in keys)
    assert any(b":answer:" in k for k in keys) and any(k.startswith(BUDGET_PREFIX.encode()) for k in keys)


async def test_tls_redis(aiohttp_client, sim, tls_redis) -> None:
    url, ca = tls_redis
    direct = redis.Redis.from_url(url, ssl_ca_certs=str(ca))
    await core_cases(aiohttp_client, sim, {"redis_url": url, "redis_ca": str(ca)}, direct)


async def test_unix_socket_redis(aiohttp_client, sim, unix_redis) -> None:
    await core_cases(aiohttp_client, sim, {"redis_url": unix_redis}, redis.Redis.from_url(unix_redis))


def test_tls_files_must_exist() -> None:
    from aggregator.config import ConfigError, parse_config_text

    with pytest.raises(ConfigError) as info:
        parse_config_text(
            '[cache]\nredis_url = "rediss://r:6380/0"\nredis_ca = "/nonexistent/ca.crt"\n'
            '[[orgs]]\nid = "a"\napi_key = "k"\n',
            environ={},
        )
    assert info.value.problems == ["cache.redis_ca: no such file"]


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    import random
    import socket

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 50_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class Cluster:
    url: str  # the first node's: the one the service is pointed at
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]

    def states(self, ports: list[int]) -> set[str]:
        return {redis.Redis(port=p).cluster("info").get("cluster_state") for p in ports}


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three masters, no replicas: the smallest Redis Cluster, made with redis-cli --cluster create.

    A node is judged failed after 1 s of silence (Redis's default is 15 s), so a test can
    lose one and see the others refuse every command (CLUSTERDOWN) without waiting long."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    ports = [cluster_port() for _ in range(3)]
    procs = []
    for port in ports:
        node = tmp_path / str(port)
        node.mkdir()
        procs.append(
            start_redis(
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(node / "nodes.conf"),
                "--cluster-node-timeout",
                "1000",
                client=redis.Redis(port=port),
                workdir=node,
            )
        )
    subprocess.run(
        [
            cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 20
    # Every node, not only the first: one that has not yet learnt the slot map answers
    # CLUSTERDOWN for the slots it does not know of.
    cluster = Cluster(f"redis://127.0.0.1:{ports[0]}/0", ports, procs)
    while cluster.states(ports) != {"ok"}:
        assert time.monotonic() < deadline, "the cluster did not come up"
        time.sleep(0.1)
    yield cluster
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


async def test_redis_cluster(aiohttp_client, sim, redis_cluster) -> None:
    direct = redis.RedisCluster.from_url(redis_cluster.url)
    await core_cases(aiohttp_client, sim, {"redis_url": redis_cluster.url, "redis_cluster": True}, direct)


async def test_a_cluster_that_loses_a_node_costs_no_org_its_search(
    aiohttp_client, sim, redis_cluster
) -> None:
    """A cluster that loses a node is an outage like any other: every org is still searched.

    The lost node's connections close under running commands, and redis-py then sometimes
    raises AttributeError rather than ConnectionError (`cache.redis_failed`): before, that
    cost an org its search, reported as an error. The others answer CLUSTERDOWN, which
    redis-py's cluster client retried ten times, a quarter of a second apart."""
    config = make_config(sim, cache={"redis_url": redis_cluster.url, "redis_cluster": True})
    client = await aiohttp_client(create_app(config))
    first = await client.get("/search.atom", params={"q": "onboarding"})
    assert set(timing(first).values()) == {"ok"}
    redis_cluster.procs[2].kill()
    deadline = time.monotonic() + 20
    while redis_cluster.states(redis_cluster.ports[:2]) != {"fail"}:
        assert time.monotonic() < deadline, "the other nodes did not notice"
        await asyncio.sleep(0.1)
    answers = await asyncio.gather(*(client.get("/search.atom", params={"q": "induction"}) for _ in range(5)))
    assert {r.status for r in answers} == {200}
    assert set(timing(answers[0]).values()) == {"ok"}  # every org answered: none timed out
    # and each was asked once for it, the five callers sharing the search
    assert {o: len(sim.calls(o, "search")) for o in KEYS} == dict.fromkeys(KEYS, 2)
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "degraded" and "Redis unreachable" in ready["cache"]


@dataclass
class SentinelSet:
    """A primary, its replica and one Sentinel watching them (quorum 1), all of the test's own."""

    primary: subprocess.Popen[bytes]
    replica: subprocess.Popen[bytes]
    sentinel: subprocess.Popen[bytes]
    ports: dict[str, int]

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.ports['sentinel']}/aggregator/0"

    def primary_port(self) -> int:
        """The port the Sentinel names as the primary now."""
        client = redis.Redis(port=self.ports["sentinel"], socket_connect_timeout=0.5)
        return int(client.execute_command("SENTINEL", "get-master-addr-by-name", "aggregator")[1])


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    ports = {name: free_port() for name in ("primary", "replica", "sentinel")}
    primary = start_redis(
        "--port", str(ports["primary"]), "--bind", "127.0.0.1",
        client=redis.Redis(port=ports["primary"]), workdir=tmp_path,
    )  # fmt: skip
    replica = start_redis(
        "--port", str(ports["replica"]), "--bind", "127.0.0.1", "--replicaof", "127.0.0.1", str(ports["primary"]),
        client=redis.Redis(port=ports["replica"]), workdir=tmp_path,
    )  # fmt: skip
    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its file: it must be its own
    conf.write_text(
        f"port {ports['sentinel']}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor aggregator 127.0.0.1 {ports['primary']} 1\n"
        "sentinel down-after-milliseconds aggregator 400\n"
        "sentinel failover-timeout aggregator 2000\n"
    )
    sentinel = subprocess.Popen(
        [REDIS or "redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    watched = SentinelSet(primary, replica, sentinel, ports)
    deadline = time.monotonic() + 10
    while True:
        try:
            if watched.primary_port() == ports["primary"]:
                break
        except (redis.RedisError, TypeError):
            pass
        assert time.monotonic() < deadline, "the Sentinel did not start"
        time.sleep(0.05)
    yield watched
    for proc in (sentinel, replica, primary):
        proc.terminate()
        proc.wait(10)


async def test_sentinel_managed_redis_survives_a_failover(aiohttp_client, sim, sentinel_set) -> None:
    """The primary dies during a burst: no 5xx, ilos never sees more than the budget, and once the
    Sentinel has promoted the replica the service uses Redis again."""
    for org in sim.orgs:
        org.rate_limit, org.rate_window = 20, 60.0  # ilos counts exactly what the service may send
    config = make_config(
        sim,
        cache={"redis_url": sentinel_set.url, "redis_retry_seconds": 0.2},
        upstream={"rate_limit": 20, "rate_window": 60, "one_off_reserve": 0},
    )
    client = await aiohttp_client(create_app(config))
    first = await client.get("/search.atom", params={"q": "onboarding"})
    assert first.status == 200 and (await (await client.get("/readyz")).json())["cache"] == "redis"
    words = ["induction", "payroll", "safety", "welcome", "benefits", "lecture", "analysis", "project"]

    async def search(word: str) -> int:
        resp = await client.get("/search.atom", params={"q": word})
        await resp.read()
        return resp.status

    burst = [asyncio.create_task(search(w)) for w in words[:4]]
    sentinel_set.primary.kill()  # mid-burst, no goodbye
    burst += [asyncio.create_task(search(w)) for w in words[4:]]
    statuses = await asyncio.gather(*burst)
    assert all(s < 500 for s in statuses), statuses
    deadline = time.monotonic() + 15
    while sentinel_set.primary_port() != sentinel_set.ports["replica"]:
        assert time.monotonic() < deadline, "no failover"
        await asyncio.sleep(0.1)
    while (await (await client.get("/readyz")).json())["cache"] != "redis":
        assert time.monotonic() < deadline, "the service did not come back to Redis"
        await asyncio.sleep(0.1)
    again = await client.get("/search.atom", params={"q": "safety and health"})
    assert again.status == 200
    promoted = redis.Redis(port=sentinel_set.ports["replica"])
    assert promoted.keys(f"{NAMESPACE}:answer:*")  # written to the new primary
    assert not sim.throttled()  # the budget held at the upstream throughout


def test_sentinel_urls_are_read_and_checked_without_showing_the_password() -> None:
    from aggregator.config import ConfigError, SentinelUrl, parse_config_text, sentinel_url

    assert sentinel_url("rediss+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380/cache/2") == SentinelUrl(
        (("10.0.0.1", 26379), ("::1", 26380)), "cache", 2, None, "s3cret", tls=True
    )
    for url, problem in [
        ("redis+sentinel://:s3cret@10.0.0.1/cache", "each Sentinel must be host:port"),
        ("redis+sentinel://:s3cret@10.0.0.1:26379", "must end with /service_name"),
        ("redis+sentinel://:s3cret@10.0.0.1:26379/cache/x", "must end with /service_name"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config_text(
                f'[cache]\nredis_url = "{url}"\n[[orgs]]\nid = "a"\napi_key = "k"\n', environ={}
            )
        assert any(problem in p for p in info.value.problems)
        assert "s3cret" not in str(info.value)
