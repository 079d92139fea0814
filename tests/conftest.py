"""Shared fixtures: the data folder and a fresh in-process txd -> channel-sim -> rxd chain per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from channel_sim.app import ChannelSim
from channel_sim.config import ChannelSimConfig
from rxd.app import Rxd
from rxd.config import RxdConfig
from rxd.retrieval.embed import Embedder
from semcom.config import load_config
from semcom.data import data_dir
from semcom.launch import free_port
from txd.app import Txd
from txd.config import TxdConfig
from txd.understanding.base import Understander


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_dir()
    if not (root / "videos").is_dir():
        pytest.skip(f"shared test data not found at {root} (set SEMCOM_DATA_DIR)")
    return root


_EMBEDDER: list[Embedder] = []


def shared_embedder() -> Embedder:
    """One all-MiniLM-L6-v2 for the whole session: loading it for every chain would dominate the run time."""
    if not _EMBEDDER:
        _EMBEDDER.append(Embedder())
    return _EMBEDDER[0]


@dataclass
class Chain:
    txd: Txd
    channel: ChannelSim
    rxd: Rxd

    @property
    def txd_address(self) -> str:
        return f"127.0.0.1:{self.txd.port}"

    @property
    def rxd_address(self) -> str:
        return f"127.0.0.1:{self.rxd.port}"

    @property
    def channel_address(self) -> str:
        return f"127.0.0.1:{self.channel.port}"


async def start_chain(
    tmp: Path,
    *,
    mcs: str = "qpsk/ldpc_r12",
    models: Sequence[dict[str, object]] = (),
    txd_set: Sequence[str] = (),
    rxd_set: Sequence[str] = (),
    understander: Understander | None = None,
) -> Chain:
    txd_port = free_port()
    rxd = Rxd(
        load_config(
            RxdConfig,
            overrides=[
                "server.listen=127.0.0.1:0",
                "metrics.listen=127.0.0.1:0",
                f"index.path={tmp / 'index.db'}",
                f"transmitter.address=127.0.0.1:{txd_port}",
                "http.listen=127.0.0.1:0",
                *rxd_set,
            ],
        ),
        embedder=shared_embedder(),
    )
    channel = ChannelSim(
        ChannelSimConfig.model_validate(
            {
                "server": {"listen": "127.0.0.1:0"},
                "upstream": {"address": f"127.0.0.1:{rxd.port}"},
                "channel": {"models": list(models), "seed": 7},
            }
        )
    )
    txd = Txd(
        load_config(
            TxdConfig,
            overrides=[
                f"server.listen=127.0.0.1:{txd_port}",
                f"link.upstream=127.0.0.1:{channel.port}",
                f"link.mcs={mcs}",
                "link.batch_delay_s=0.01",
                f"clips.dir={tmp / 'clips'}",
                *txd_set,
            ],
        ),
        understander=understander,
    )
    for daemon in (rxd, channel, txd):
        await daemon.start()
    return Chain(txd, channel, rxd)


async def stop_chain(chain: Chain) -> None:
    await chain.txd.stop(1.0)
    await chain.channel.stop(1.0)
    await chain.rxd.stop(1.0)


@pytest_asyncio.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    c = await start_chain(tmp_path)
    yield c
    await stop_chain(c)
