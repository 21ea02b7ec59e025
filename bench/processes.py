"""Start the pieces of a benchmark as separate processes: simulator, service, bare server.

Each runs in its own process so the load generator, the service and the
simulated upstream do not share an event loop or a GIL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except Exception:
            if time.monotonic() > deadline:
                raise TimeoutError(url) from None
            time.sleep(0.1)


def start_simulator(
    orgs: int, videos: int, latency: float, metadata_latency: float, port: int | None = None, *extra: str
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """A simulator process (bench/simserver.py); `extra` are more of its options."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.simserver",
            "--orgs",
            str(orgs),
            "--videos",
            str(videos),
            "--latency",
            str(latency),
            "--metadata-latency",
            str(metadata_latency),
            "--port",
            str(port),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    keys = json.loads(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}", keys


def service_config(
    sim_url: str,
    keys: list[str],
    *,
    port: int,
    extra: str = "",
    parse_workers: int = 2,
    access_log: bool = True,
    timeout: float = 4.0,
    webhook_secret: str | None = None,
    server_extra: str = "",
) -> Path:
    """A config file for a service on `port` with one org per simulator key."""
    hook = f'webhook_secret = "{webhook_secret}"\n' if webhook_secret else ""
    orgs = "".join(
        f'[[orgs]]\nid = "org{i}"\nname = "Org {i}"\napi_key = "{k}"\n{hook}\n' for i, k in enumerate(keys)
    )
    config = (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nparse_workers = {parse_workers}\n'
        f"access_log = {'true' if access_log else 'false'}\n{server_extra}\n"
        f'[upstream]\nbase_url = "{sim_url}"\ntimeout = {timeout}\n{extra}\n{orgs}'
    )
    path = Path(tempfile.mkstemp(suffix=".toml", prefix="bench-")[1])
    path.write_text(config)
    return path


def start_service(
    sim_url: str,
    keys: list[str],
    *,
    port: int | None = None,
    extra: str = "",
    parse_workers: int = 2,
    workers: int = 1,
    access_log: bool = True,
    timeout: float = 4.0,
    webhook_secret: str | None = None,
    trace: str | None = None,
    server_extra: str = "",
    root: Path = ROOT,
) -> tuple[subprocess.Popen, str]:
    """A `serve` process; with `trace`, under `bench.turntrace`, its long loop steps written there.

    `root`: the checkout whose code it runs (another commit's, for a before and after)."""
    port = port or free_port()
    path = service_config(
        sim_url,
        keys,
        port=port,
        extra=extra,
        parse_workers=parse_workers,
        access_log=access_log,
        timeout=timeout,
        webhook_secret=webhook_secret,
        server_extra=server_extra,
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            *(["bench.turntrace", trace, "--"] if trace else ["aggregator"]),
            "serve",
            "--config",
            str(path),
            "--workers",
            str(workers),
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(base + "/healthz")
    except TimeoutError:
        stop(proc)
        check = subprocess.run(
            [sys.executable, "-m", "aggregator", "check-config", "--config", str(path)],
            cwd=root,
            capture_output=True,
            text=True,
        )
        raise RuntimeError(f"the service did not start: {check.stderr.strip() or 'see its log'}") from None
    return proc, base


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def start_replicas(
    count: int, sim_url: str, keys: list[str], *, extra: str, root: Path = ROOT
) -> list[tuple[subprocess.Popen, str]]:
    """`count` serve processes sharing one key budget, each told how many share it (replicas_hint)."""
    return [
        start_service(sim_url, keys, extra=extra, server_extra=f"replicas_hint = {count}", root=root)
        for _ in range(count)
    ]


def redis_port(url: str) -> int:
    """The port of a `start_redis` URL, to start one again empty in its place."""
    return int(url.rsplit(":", 1)[1].split("/")[0])


def start_redis(port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free port (or `port`, to restart one empty), keeping nothing on disk."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tempfile.mkdtemp(prefix="bench-redis-"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("redis-server did not start")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"
