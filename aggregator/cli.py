"""The command line (contract: "Command line"): serve, demo, check-config."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence

from aggregator import PRODUCT, __version__
from aggregator.config import Config, ConfigError, default_config_path, load_config
from aggregator.demo.run import run_demo
from aggregator.resources import sample_config
from aggregator.serve import logs
from aggregator.serve.server import CannotListen, serve_forever

DEMO_CONFIG = sample_config("demo.toml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PRODUCT, description="One OpenSearch endpoint over many ilos organisations."
    )
    parser.add_argument("--version", action="version", version=f"{PRODUCT} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument(
        "--config", help="config file (default $AGGREGATOR_CONFIG, then config/aggregator.toml)"
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port (default 1)")

    demo = sub.add_parser("demo", help="run against a built-in simulated ilos, no keys or Redis needed")
    demo.add_argument("--config", default=str(DEMO_CONFIG), help=argparse.SUPPRESS)
    demo.add_argument("--host", default=None)
    demo.add_argument("--port", type=int, default=None)

    check = sub.add_parser("check-config", help="validate a config file and say what is wrong")
    check.add_argument("--config")

    args = parser.parse_args(argv)
    logs.configure()

    if args.command == "check-config":
        path = default_config_path(args.config)
        config = _load_or_report(path)
        if config is None:
            return 2
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"{path}: OK ({len(config.orgs)} organisations, {len(config.clients)} clients, "
            f"cache: {'redis' if config.cache.redis_url else 'in-process'})"
        )
        return 0

    config_path = default_config_path(args.config)
    config = _load_or_report(config_path)
    if config is None:
        return 2
    config = _with_address(config, args.host, args.port)
    for warning in config.warnings:
        logging.getLogger(PRODUCT).warning("config: %s", warning)
    try:
        if args.command == "demo":
            return asyncio.run(run_demo(config))
        if args.workers < 1 or args.workers > 64:
            print("--workers: must be from 1 to 64", file=sys.stderr)
            return 2
        config = dataclasses.replace(config, server=dataclasses.replace(config.server, workers=args.workers))
        if args.workers == 1:
            asyncio.run(serve_forever(config))
            return 0
    except CannotListen as exc:
        print(exc, file=sys.stderr)
        return 1
    from aggregator.serve import workers  # gunicorn: only for more than one process

    return workers.run(config_path, config)


def _load_or_report(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _with_address(config: Config, host: str | None, port: int | None) -> Config:
    """Apply --host/--port; a public_url that was only the default follows them."""
    server = config.server
    derived = server.public_url == f"http://{server.host}:{server.port}"
    server = dataclasses.replace(server, host=host or server.host, port=server.port if port is None else port)
    if derived:
        server = dataclasses.replace(server, public_url=f"http://{server.host}:{server.port}")
    return dataclasses.replace(config, server=server)
