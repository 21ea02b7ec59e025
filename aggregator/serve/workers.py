"""`serve --workers N`: N processes under gunicorn, each an aiohttp app behind the connection guard.

gunicorn supervises the workers: one killed is replaced, SIGTERM lets
requests under way finish (`graceful_timeout`), SIGHUP starts new workers
that read the config file again (keys, clients) and retires the old ones
without dropping a request, and a worker whose master is gone shuts down.
Each worker builds its app and a `guard.GuardedRunner` and hands the runner
to aiohttp's `GunicornWebWorker`, so the header deadline, idle limit and
connection cap apply as in a single process. Everything the workers share
goes through Redis; their metrics through prometheus-client's multiprocess
directory, made fresh for each run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from gunicorn.app.base import BaseApplication

from aggregator.config import Config, ConfigError, load_config
from aggregator.serve import logs
from aggregator.serve.guard import GuardedRunner, limits_for
from aggregator.web.accesslog import AccessLogger, flush
from aggregator.web.kept import kept_first

GRACEFUL_TIMEOUT = 10  # seconds requests under way may take to finish on SIGTERM


class ServiceApplication(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    def __init__(self, config_path: str, config: Config) -> None:
        self.config_path = config_path
        self.config = config  # as the command line left it (host, port, workers)
        super().__init__()

    def load_config(self) -> None:
        server = self.config.server
        host = f"[{server.host}]" if ":" in server.host else server.host
        settings: dict[str, Any] = {
            "bind": f"{host}:{server.port}",
            "workers": server.workers,
            # asyncio's own loop, never uvloop even where it is installed: the loop's stall
            # metric (`loop.lag.time_iterations`) times asyncio's selector, which uvloop has not.
            "worker_class": "aiohttp.GunicornWebWorker",
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "timeout": 30,
            "keepalive": int(server.keepalive_timeout),
            "accesslog": None,  # ours, in the worker (accesslog.AccessLogger)
            "errorlog": "-",
            "proc_name": "ilos-aggregator",
            "child_exit": _child_exit,
        }
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 24's control socket sits at one path per user: two services (or two
            # test runs) would take each other's. We use none.
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[[], Awaitable[web.AppRunner]]:
        """In each worker: read the config file again (SIGHUP reloads it), then build the guarded runner."""
        path, given = self.config_path, self.config

        async def runner() -> web.AppRunner:
            from aggregator.web.app import (
                create_app,  # imported in the worker, after the metrics directory is set
            )

            try:
                fresh = load_config(path)
            except ConfigError as exc:
                logging.getLogger(__name__).error("config: %s", "; ".join(exc.problems))
                raise
            config = dataclasses.replace(
                fresh,
                server=dataclasses.replace(
                    fresh.server, host=given.server.host, port=given.server.port, workers=given.server.workers
                ),
            )
            if config.server.log_format == "json":
                logs.use_json()
            limits = limits_for(config)
            AccessLogger.write_lines = config.server.access_log  # requests are counted either way
            kwargs: dict[str, Any] = {"access_log_class": AccessLogger}
            app = create_app(config)
            # Access lines are written in batches a moment later: the last ones of a worker
            # that stops would be lost with its loop without this.
            app.on_cleanup.append(_flush_access_log)
            return GuardedRunner(
                app, limits=limits, front=kept_first, shutdown_timeout=GRACEFUL_TIMEOUT * 0.9, **kwargs
            )

        return runner


async def _flush_access_log(app: web.Application) -> None:
    flush()  # the lines still batched when the worker stops


def _child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges leave the shared metrics directory with it."""
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped in prometheus-client


def run(config_path: str, config: Config) -> int:
    """Serve with `config.server.workers` processes until SIGTERM or SIGINT; the exit status."""
    directory = tempfile.mkdtemp(prefix="ilos-aggregator-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    _use_multiprocess_values()
    master = os.getpid()
    try:
        ServiceApplication(config_path, config).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        # Workers are forked from inside `run()` and leave through this frame too: one
        # retired by SIGHUP took the directory away from the workers that replaced it,
        # whose next new metric then failed (a 500). Only the master removes it.
        if os.getpid() == master:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def _use_multiprocess_values() -> None:
    """prometheus-client picks its value class when first imported; this process imported it
    before the directory existed, so pick again (the workers are forked from here)."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # untyped in prometheus-client
