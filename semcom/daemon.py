"""The command-line entry shared by txd, rxd and channel-sim: config loading, logging, run until a signal."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import uvloop
from pydantic import BaseModel

from semcom.auth import redacted
from semcom.config import ConfigError, load_config
from semcom.errors import SemcomError
from semcom.server import GrpcServer, wait_for_signal
from semcom.telemetry import configure_logging

log = logging.getLogger(__name__)

C = TypeVar("C", bound=BaseModel)


class Daemon(Protocol):
    grpc: GrpcServer

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...
    async def stop(self, grace_s: float | None = None) -> None: ...


def _parser(name: str, description: str, flags: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    env = "SEMCOM_" + name.upper().replace("-", "_")
    parser = argparse.ArgumentParser(
        prog=name,
        description=description,
        epilog=(
            f"Settings come from --config (TOML), then environment variables {env}__SECTION__KEY, then --set "
            "and the flags above; later wins. See deploy/configs/ for annotated examples."
        ),
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. server.grace_s=5",
    )
    parser.add_argument("--check-config", action="store_true", help="validate the config, print it, and exit")
    parser.add_argument("--port-file", type=Path, help="write the bound gRPC port to this file once serving")
    for flag, (key, help_text) in flags.items():
        parser.add_argument(
            flag, dest=key.replace(".", "__"), metavar=key.split(".")[-1].upper(), help=help_text
        )
    return parser


def daemon_main(
    name: str,
    description: str,
    model: type[C],
    build: Callable[[C], Daemon],
    flags: dict[str, tuple[str, str]],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse arguments, load `model`, then serve until SIGTERM/SIGINT and drain. Returns the exit code."""
    args = _parser(name, description, flags).parse_args(argv)
    overrides = list(args.set)
    for key, _ in flags.values():
        value = getattr(args, key.replace(".", "__"))
        if value is not None:
            overrides.append(f"{key}={value}")
    env_prefix = "SEMCOM_" + name.upper().replace("-", "_")
    try:
        cfg = load_config(
            model, path=args.config, environ=os.environ, env_prefix=env_prefix, overrides=overrides
        )
    except ConfigError as err:
        print(f"{name}: {err}", file=sys.stderr)
        return 2
    if args.check_config:
        # Secrets stay out of the output: tokens, their hashes, passwords in source URLs.
        print(json.dumps(redacted(cfg.model_dump(mode="json")), indent=2))
        return 0
    logging_cfg: Any = getattr(cfg, "logging")  # noqa: B009 - every daemon config has a logging section
    configure_logging(logging_cfg, name)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_serve(name, lambda: build(cfg), args.port_file))
    except (SemcomError, OSError) as err:
        log.error("%s failed to start: %s", name, err)
        return 1


async def _serve(name: str, build: Callable[[], Daemon], port_file: Path | None) -> int:
    daemon = build()  # gRPC objects belong to the running loop: create them inside it
    await daemon.start()
    # What start() loaded (models and their libraries) lives as long as the daemon: keep it out of the cyclic
    # collector's full passes, which stop every thread (with torch and transformers loaded, one took 250 ms).
    gc.collect()
    gc.freeze()
    if port_file is not None:
        await asyncio.to_thread(port_file.write_text, f"{daemon.port}\n")
    signalled = asyncio.ensure_future(wait_for_signal())
    ends: list[asyncio.Future[Any]] = [signalled, daemon.grpc.dead]
    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    if signalled.done():
        log.info("%s: %s received, draining", name, signalled.result().name)
    else:
        signalled.cancel()
        log.error("%s: draining after a dead backend: %s", name, daemon.grpc.dead.result())
    await daemon.stop()
    # A dead backend exits non-zero, so that a supervisor (systemd, Kubernetes) restarts the daemon.
    return 0 if signalled.done() and not signalled.cancelled() else 1
