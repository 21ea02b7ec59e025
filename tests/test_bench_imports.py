"""Every bench module imports: a module moved or renamed in aggregator/ breaks CI here,
not the next person who runs a benchmark (the benches themselves run by hand, docs/benchmarks.md)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHES = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "bench").glob("*.py"))


@pytest.mark.parametrize("name", [b for b in BENCHES if b != "__init__"])
def test_the_bench_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
