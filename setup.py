"""Setuptools finds the package's folders itself, so a new subpackage cannot drop out of the wheel.

Everything else is in pyproject.toml. The two data packages are mapped there from the
top-level templates/ and config/ folders, which `find_packages` cannot see under aggregator/.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["aggregator", "aggregator.*"]), "aggregator.templates", "aggregator.configs"])
