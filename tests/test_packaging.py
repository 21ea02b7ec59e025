"""The templates and sample configs are found however the package is installed.

They live top-level in the repository (templates/, config/) and ship inside
the package; both the README's `pip install -e .` and a wheel must find them
through importlib.resources, from any working directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import aggregator, aggregator.web.app\n"
    "from aggregator.resources import template, sample_config\n"
    "from aggregator.config import load_config\n"
    "assert b'<form' in template('search.html').read_bytes()\n"
    "assert template('search.css').read_bytes() and template('embed.js').read_bytes()\n"
    "assert [o.id for o in load_config(sample_config('demo.toml')).orgs] == ['engineering', 'medicine', 'hr']\n"
    "print(aggregator.__file__)\n"
)


def run_probe(cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_editable_install_finds_them_from_anywhere(tmp_path) -> None:
    where = run_probe(tmp_path)
    assert Path(where).parent == ROOT / "aggregator"


def test_a_wheel_carries_them(tmp_path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "aggregator/templates/search.html",
        "aggregator/templates/search.css",
        "aggregator/templates/embed.js",
        "aggregator/configs/demo.toml",
        "aggregator/configs/aggregator.example.toml",
    ):
        assert name in names
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = run_probe(tmp_path, env=env)
    assert Path(where).parent == site / "aggregator"  # the wheel's copy, not the checkout
    # Every module of the checkout is in the wheel and imports from it: a folder that
    # packaging left out, or an import a move broke, fails here rather than for a user.
    sources = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "aggregator").rglob("*.py"))
    assert [s for s in sources if s not in names] == []
    modules = [s.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for s in sources]
    importer = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(site)!r}), (name, module.__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", importer, *modules], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
