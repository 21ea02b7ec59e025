"""Reading TOML tables into settings: each setting's default and rule written once, on its field.

A config dataclass declares a field as `setting(default, rule)`; `read_fields`
reads every such field of a table by its rule, so the default a config file
falls back to is the dataclass's own. Problems are recorded, never raised, each
naming its key path (`cache.search_ttl: ...`) and never quoting a value: a
secret typed into the wrong key must not reach a terminal or a log.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

Environ = Mapping[str, str]


class Rule(Protocol):
    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        """The key's value, or `default` when it is absent (or wrong, with a problem recorded)."""


def setting(default: Any, rule: Rule, *, secret: bool = False) -> Any:
    """A config field read from TOML by `rule`; a `secret` one stays out of `repr`."""
    return field(default=default, repr=not secret, metadata={"rule": rule})


def read_fields(table: Table, cls: type, environ: Environ, **defaults: Any) -> dict[str, Any]:
    """Every `setting` field of the dataclass `cls`, read from `table` by its rule.

    `defaults` replace a field's own default (an org's rate limit defaults to the upstream's).
    """
    return {
        f.name: f.metadata["rule"].read(table, f.name, defaults.get(f.name, f.default), environ)
        for f in fields(cls)
        if "rule" in f.metadata
    }


@dataclass(frozen=True, slots=True)
class Whole:
    lo: int
    hi: int

    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        return table.integer(key, default, self.lo, self.hi)


@dataclass(frozen=True, slots=True)
class Number:
    lo: float
    hi: float
    above: bool = False  # greater than `lo`, not equal to it

    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        return table.number(key, default, self.lo, self.hi, exclusive_min=self.above)


@dataclass(frozen=True, slots=True)
class Flag:
    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        return table.boolean(key, default)


@dataclass(frozen=True, slots=True)
class Text:
    cut: int | None = None  # longer text is cut to this many characters
    most: int | None = None  # longer text is a problem: `most_rule` says why
    most_rule: str = ""
    pattern: str | None = None  # text must match it whole, else `pattern_rule`
    pattern_rule: str = ""

    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        value = table.string(key, default) or default
        if value is None:
            return None
        if self.pattern is not None and value != default and not re.fullmatch(self.pattern, value):
            table.problem(key, self.pattern_rule)
            return default
        if self.most is not None and len(value) > self.most:
            table.problem(key, self.most_rule)
            value = value[: self.most]
        return value[: self.cut] if self.cut is not None else value


@dataclass(frozen=True, slots=True)
class Choice:
    options: tuple[str, ...]

    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        value = table.string(key, default) or default
        if value not in self.options:
            table.problem(key, "must be " + " or ".join(f'"{o}"' for o in self.options))
            return default
        return value


@dataclass(frozen=True, slots=True)
class Url:
    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        return table.url(key, default)


@dataclass(frozen=True, slots=True)
class UrlPath:
    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        return table.url_path(key, default)


@dataclass(frozen=True, slots=True)
class Secret:
    """A literal, or `env:NAME` read from the environment."""

    min_length: int = 0

    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        value = table.secret(key, environ, required=False)
        if value is not None and len(value) < self.min_length:
            table.problem(key, f"must be at least {self.min_length} characters")
        return value if value is not None else default


@dataclass(frozen=True, slots=True)
class ExistingFile:
    """A path (or env:NAME holding one) to a file that exists."""

    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        path = table.secret(key, environ, required=False)
        if path is not None and not Path(path).is_file():
            table.problem(key, "no such file")
            return default
        return path if path is not None else default


@dataclass(frozen=True, slots=True)
class Strings:
    """An array of strings, each matching `pattern` (else the whole array is `rule`'s problem)."""

    pattern: str = ".*"
    rule: str = "must be an array of strings"
    networks: bool = False  # each is an IP address or network instead

    def read(self, table: Table, key: str, default: Any, environ: Environ) -> Any:
        values = table.string_list(key)
        if values is None:
            return default
        if self.networks:
            try:
                for value in values:
                    ipaddress.ip_network(value, strict=False)
            except ValueError:
                table.problem(key, self.rule)
                return default
        elif not all(re.fullmatch(self.pattern, v) for v in values):
            table.problem(key, self.rule)
            return default
        return tuple(values)


class Table:
    """Reads one TOML table, recording problems instead of raising."""

    def __init__(self, data: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        self.problem_keys: set[str] = set()
        if not isinstance(data, Mapping):
            self.problem("", "must be a table")
            data = {}
        self.data = data
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        if not key:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        self.problem_keys.add(key)
        self.problems.append(f"{self.name(key) or '(top level)'}: {message}")

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def table(self, key: str) -> Table:
        value = self._get(key)
        return Table({} if value is None else value, self.name(key), self.problems)

    def array(self, key: str) -> list[Table]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"must be an array of tables ([[{key}]])")
            return []
        return [Table(item, f"{self.name(key)}[{i}]", self.problems) for i, item in enumerate(value)]

    def string(self, key: str, default: str | None, required: bool = False, hint: str = "") -> str | None:
        value = self._get(key)
        if value is None:
            if required:
                self.problem(key, "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"must be a non-empty string{hint}")
            return default
        return value.strip()

    def string_list(self, key: str) -> list[str] | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(key, "must be an array of strings")
            return None
        return list(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, "must be true or false")
            return default
        return value

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.problem(key, f"must be a whole number from {lo} to {hi}")
            return default
        return value

    def number(self, key: str, default: float, lo: float, hi: float, exclusive_min: bool = False) -> float:
        value = self._get(key)
        if value is None:
            return default
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            ok = (value > lo if exclusive_min else value >= lo) and value <= hi
        if not ok:
            low = "greater than" if exclusive_min else "at least"
            self.problem(key, f"must be a number {low} {lo:g} and at most {hi:g}")
            return default
        return float(value)

    def url(self, key: str, default: str | None) -> str | None:
        if self.data.get(key) is None:
            self.used.add(key)
            return default
        value = self.string(key, None)
        if value is None:
            return default
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problem(key, "must be an absolute http:// or https:// URL")
            return default
        try:
            port = parts.port
        except ValueError:  # out of range, or not a number
            port = 0
        if port == 0 or (parts.netloc.endswith(":") and port is None):
            self.problem(key, "must have a port from 1 to 65535, or none")
            return default
        if parts.query or parts.fragment or parts.username or parts.password:
            self.problem(key, "must not carry a query, fragment or credentials")
            return default
        return value

    def url_path(self, key: str, default: str) -> str:
        value = self.string(key, default) or default
        if not value.startswith("/") or "?" in value or "#" in value:
            self.problem(key, "must be a path starting with /")
            return default
        return value

    def secret(self, key: str, environ: Environ, required: bool) -> str | None:
        value = self.string(key, None, required, hint=" (or env:NAME)")
        if value is None:
            return None
        if value.startswith("env:"):
            var = value[4:]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                self.problem(key, "env: must be followed by an environment variable name")
                return None
            resolved = environ.get(var)
            if resolved is None:
                self.problem(key, f"environment variable {var} is not set")
                return None
            if not resolved.strip():
                self.problem(key, f"environment variable {var} is empty")
                return None
            return resolved.strip()
        return value

    def finish(self) -> None:
        for key in sorted(set(self.data) - self.used):
            self.problem(str(key), "unknown key")
