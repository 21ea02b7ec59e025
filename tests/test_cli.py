"""The command line as an operator uses it: demo and serve start, answer, and stop cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port
from tests.helpers import serve

ROOT = Path(__file__).resolve().parent.parent


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def descendants(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = {int(p) for p in out}
    for child in list(found):
        found |= descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone in all but name.
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except FileNotFoundError:
        return False


def test_demo_answers_and_stops_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "demo", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/search.atom?q=onboarding") as resp:
            body = resp.read()
        assert body.count(b"<entry>") == 18 and body.count(b'duration="') == 18
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert f"http://127.0.0.1:{port}/?q=onboarding".encode() in out
    assert b"Traceback" not in err


def test_a_port_in_use_is_one_line_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "aggregator", "demo", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_serve_with_workers_stops_every_process(tmp_path) -> None:
    port = free_port()
    config = tmp_path / "aggregator.toml"
    config.write_text(f'[server]\nport = {port}\nparse_workers = 1\n[[orgs]]\nid = "a"\napi_key = "k"\n')
    proc = serve(config, "--workers", "2")
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
        # Two workers, each with a parse process (and the resource tracker): poll until all are up.
        deadline = time.monotonic() + 30
        children = descendants(proc.pid)
        while len(children) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
            children = descendants(proc.pid)
        assert len(children) >= 4
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if alive(p)]


def serve_with_a_client(
    tmp_path: Path, token: str, server_extra: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    """`serve` with one org (whose upstream refuses connections) and one client named "widget"."""
    port = free_port()
    config = tmp_path / "aggregator.toml"
    config.write_text(
        f'[server]\nport = {port}\nparse_workers = 0\nsigning_secret = "signing-secret-0123456789"\n{server_extra}'
        f'[[orgs]]\nid = "a"\napi_key = "k"\nbase_url = "http://127.0.0.1:9"\n'
        f'[[clients]]\nname = "widget"\ntoken = "{token}"\n'
    )
    proc = serve(config)
    wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
    return proc, port


def test_logs_carry_no_token_and_no_flood(tmp_path) -> None:
    """Encoded parameter names are redacted; malformed requests are one short line each, and not a flood."""
    import socket

    token = "client-token-0123456789abcdef"
    proc, port = serve_with_a_client(tmp_path, token)
    try:
        for name in ("key", "k%65y", "%6B%65%79"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/search.atom?q=x&{name}={token}") as resp:
                assert resp.status == 200  # accepted as the token, however the name is escaped
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/search.atom?q=x&KEY={token}")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401  # not the token's name, but redacted all the same
        malformed = (
            f"GET /search.atom?q=x&key={token} HTTP/1.1\r\nHost: a\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: abc\r\n\r\n"
        ).encode()
        for _ in range(60):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(malformed)
                assert s.recv(64).startswith(b"HTTP/1.")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    log = err.decode()
    assert token not in log
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "malformed request" in line]
    assert 1 <= len(lines) <= 20 and all(len(line) < 200 for line in lines)


def test_json_logs_and_request_ids(tmp_path) -> None:
    """log_format = "json": every line one object; X-Request-Id ties a response to its access line."""
    import json

    token = "json-log-client-token-0123456789"
    proc, port = serve_with_a_client(tmp_path, token, 'log_format = "json"\n')
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/search.json?q=x&key={token}",
            headers={"X-Request-Id": "intranet-42.a_b"},
        )
        with urllib.request.urlopen(request) as resp:
            assert resp.headers["X-Request-Id"] == "intranet-42.a_b"  # a safe id is kept
        unsafe = urllib.request.Request(
            f"http://127.0.0.1:{port}/healthz", headers={"X-Request-Id": "x" * 65}
        )
        with urllib.request.urlopen(unsafe) as resp:
            fresh = resp.headers["X-Request-Id"]
            assert fresh != "x" * 65 and re.fullmatch(r"[A-Za-z0-9._-]{1,64}", fresh)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]  # every line is JSON
    [access] = [r for r in lines if r.get("request_id") == "intranet-42.a_b"]
    assert access["route"] == "/search.json" and access["status"] == 200 and access["client"] == "widget"
    assert access["orgs"] == {"a": "error"}
    assert token not in err.decode()
    assert any(r.get("request_id") == fresh for r in lines)
