"""rxd: the receiver daemon (`rxd --help`)."""

from __future__ import annotations

from collections.abc import Sequence

from rxd.app import Rxd
from rxd.config import RxdConfig
from semcom.daemon import daemon_main


def main(argv: Sequence[str] | None = None) -> int:
    return daemon_main(
        "rxd",
        "Receiver daemon: decodes the semantic link, indexes records and answers queries.",
        RxdConfig,
        Rxd,
        {
            "--listen": ("server.listen", "host:port of the Link + Receiver gRPC server"),
            "--index": ("index.path", "SQLite file of the record index"),
            "--transmitter": ("transmitter.address", "host:port of txd, for clip fetches"),
            "--metrics-listen": ("metrics.listen", "host:port of the /metrics endpoint"),
        },
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
