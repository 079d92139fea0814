"""Logging set-up and the Prometheus /metrics endpoint (configured once, in a daemon's __main__)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server

from semcom.config import LoggingConfig, MetricsConfig, split_hostport


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def configure_logging(cfg: LoggingConfig, daemon: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if cfg.json_lines:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {daemon} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)


@dataclass
class MetricsEndpoint:
    """A running /metrics HTTP server."""

    port: int
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics(cfg: MetricsConfig) -> MetricsEndpoint | None:
    """Serve the default Prometheus registry at http://listen/metrics; None when disabled."""
    if not cfg.enabled:
        return None
    host, port = split_hostport(cfg.listen)
    server, thread = start_http_server(port, addr=host)
    return MetricsEndpoint(port=int(server.server_port), _server=server, _thread=thread)
