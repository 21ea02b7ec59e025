"""The service's log lines: short, free of secrets, and not a flood.

- A request aiohttp cannot parse is logged as one short line naming the peer
  and the kind of error, never with aiohttp's traceback, which quotes the
  offending bytes (a `key=` or an `Authorization` header among them).
- A line that repeats (same logger, same message template) is written at most
  `BURST` times per `WINDOW` seconds; then one line says how many were held
  back. A flood of bad requests or failing lookups cannot fill a disk.
"""

from __future__ import annotations

import logging
import time

from aiohttp.http_exceptions import HttpProcessingError

BURST = 20
WINDOW = 10.0
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class MalformedRequests(logging.Filter):
    """aiohttp's "Error handling request" for a request it could not parse, as one short line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "aiohttp.server" or not record.exc_info:
            return True
        exc = record.exc_info[1]
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "malformed request from %s: %s (HTTP %s)"
            record.args = (peer, type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class Repeats(logging.Filter):
    """At most BURST lines per WINDOW for each (logger, message template); then a count of the rest."""

    def __init__(self, burst: int = BURST, window: float = WINDOW) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (window start, lines in it)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        start, count = self._seen.get(key, (now, 0))
        if now - start >= self.window:
            if count > self.burst:
                record.msg = (
                    f"{record.msg} [and {count - self.burst} more like it in the last {self.window:g} s]"
                )
            start, count = now, 0
        count += 1
        self._seen[key] = (start, count)
        if len(self._seen) > 10_000:  # templates are few; this only bounds a pathological case
            self._seen.clear()
        return count <= self.burst


def use_json() -> None:
    """`server.log_format = "json"`: every log line one JSON object (python-json-logger)."""
    from pythonjsonlogger.json import JsonFormatter

    from aggregator.web.accesslog import AccessLogger

    formatter = JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    AccessLogger.json_lines = True


def configure(level: int = logging.INFO, fmt: str = FORMAT) -> None:
    """Root logging on stderr with both filters; called once per process (cli, workers)."""
    logging.basicConfig(level=level, format=fmt)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MalformedRequests) for f in handler.filters):
            handler.addFilter(MalformedRequests())
            handler.addFilter(Repeats())
