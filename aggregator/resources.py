"""The files that ship beside the code: the page's templates and the sample configs.

They live top-level in the repository (templates/, config/) and are mapped
into the package as `aggregator.templates` and `aggregator.configs`
(pyproject's package-dir), so `importlib.resources` finds them the same way
in a checkout installed with `pip install -e .` and in a wheel.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path


def template(name: str) -> Traversable:
    return files("aggregator.templates").joinpath(name)


def sample_config(name: str) -> Path:
    """A path, because the config loader and argparse defaults want one."""
    resource = files("aggregator.configs").joinpath(name)
    with as_file(resource) as path:  # a real file in every supported install
        return Path(path)
