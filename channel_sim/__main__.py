"""channel-sim: the channel-impairment proxy (`channel-sim --help`)."""

from __future__ import annotations

from collections.abc import Sequence

from channel_sim.app import ChannelSim
from channel_sim.config import ChannelSimConfig
from semcom.daemon import daemon_main


def main(argv: Sequence[str] | None = None) -> int:
    return daemon_main(
        "channel-sim",
        "Channel simulator: a Link proxy that impairs bursts like a noisy wireless link.",
        ChannelSimConfig,
        ChannelSim,
        {
            "--listen": ("server.listen", "host:port of the Link + ChannelAdmin gRPC server"),
            "--upstream": ("upstream.address", "host:port of the Link service to forward to (rxd)"),
            "--chain": ("channel.models", 'JSON list of models, e.g. \'[{"kind":"awgn","snr_db":9}]\''),
            "--seed": ("channel.seed", "seed of the per-stream random generators"),
            "--metrics-listen": ("metrics.listen", "host:port of the /metrics endpoint"),
        },
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
