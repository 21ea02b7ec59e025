"""The command line as an operator uses it: demo and serve start, answer, and stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

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


def test_serve_with_workers_stops_every_process(tmp_path) -> None:
    port = free_port()
    config = tmp_path / "aggregator.toml"
    config.write_text(f'[server]\nport = {port}\nparse_workers = 1\n[[orgs]]\nid = "a"\napi_key = "k"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "serve", "--config", str(config), "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
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
