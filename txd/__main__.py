"""txd: the transmitter daemon (`txd --help`)."""

from __future__ import annotations

from collections.abc import Sequence

from semcom.daemon import daemon_main
from txd.app import Txd
from txd.config import TxdConfig


def main(argv: Sequence[str] | None = None) -> int:
    return daemon_main(
        "txd",
        "Transmitter daemon: ingests video, sends a few dozen bits per person over the semantic link.",
        TxdConfig,
        Txd,
        {
            "--listen": ("server.listen", "host:port of the Transmitter gRPC server"),
            "--upstream": ("link.upstream", "host:port of the Link service (channel-sim or rxd)"),
            "--mcs": ("link.mcs", "modulation/coding, e.g. qam16/ldpc_r12, or 'bytes'"),
            "--metrics-listen": ("metrics.listen", "host:port of the /metrics endpoint"),
        },
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
