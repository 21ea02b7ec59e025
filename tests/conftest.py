"""Shared fixtures: a real Redis, the simulated ilos over loopback, our app, and a clock.

Redis: always a private `redis-server` on a free port, started for the test
session (and flushed per test that asks for it clean); the tests never touch
a Redis they did not start, such as the one on 6379. Tests that stop and
restart Redis start one of their own.

Time: apps under test read a `FakeClock`, so a test moves time past a TTL or a
cool-down instead of sleeping it out.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from aggregator.config import Config, parse_config_text
from aggregator.demo.samples import demo_orgs
from aggregator.demo.simulator import Simulator
from aggregator.web.app import create_app

KEYS = {
    "engineering": "sim-key-engineering-0001",
    "medicine": "sim-key-medicine-0002",
    "hr": "sim-key-hr-0003",
}
NAMES = {"engineering": "Engineering", "medicine": "Medicine", "hr": "Human Resources"}
ARTIFACTS = Path(__file__).parent / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


class RedisProcess:
    """A redis-server of the test's own, which the test may stop and start again."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="aggregator-redis-")
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class FakeClock:
    """Epoch seconds that move only when the test says so; starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    server = RedisProcess()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_clean(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def sim() -> Simulator:
    simulator = Simulator(demo_orgs(KEYS))
    await simulator.start()
    yield simulator
    await simulator.stop()


def _toml_table(name: str, values: dict[str, object]) -> str:
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    return f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in values.items())


def config_toml(
    sim: Simulator,
    *,
    server: dict | None = None,
    cache: dict | None = None,
    upstream: dict | None = None,
    extra: str = "",
    orgs: dict[str, str] | None = None,
) -> str:
    """A config for the simulator's orgs; the dicts override the test defaults key by key."""
    orgs = KEYS if orgs is None else orgs
    org_tables = "".join(
        f'\n[[orgs]]\nid = "{oid}"\nname = "{NAMES.get(oid, oid)}"\napi_key = "{key}"\n'
        for oid, key in orgs.items()
    )
    return "\n".join(
        [
            _toml_table("server", {"public_url": "http://videos.test", "parse_workers": 0, **(server or {})}),
            _toml_table("cache", cache or {}),
            _toml_table("upstream", {"base_url": sim.base_url, "timeout": 2.0, **(upstream or {})}),
            extra,
            org_tables,
        ]
    )


def make_config(sim: Simulator, **kw) -> Config:
    return parse_config_text(config_toml(sim, **kw), environ={})


@pytest.fixture
async def client(aiohttp_client, sim, clock):
    return await aiohttp_client(create_app(make_config(sim), clock=clock))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def redis_client_app(aiohttp_client, sim, redis_clean, clock):
    """A factory of test clients of an app on the test's own Redis db, with the test's clock."""

    async def make(**cache):
        config = make_config(sim, cache={"redis_url": redis_clean, **cache}, upstream={"timeout": 0.5})
        return await aiohttp_client(create_app(config, clock=clock))

    return make
