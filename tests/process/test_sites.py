"""Three camera sites into one operations centre, as real processes: each txd (its own site id; one through
channel-sim) sends the records of a real video, and a clip of each site comes back through rxd over the
backhaul the site opened: rxd has no transmitter.address, so it holds no route to any camera. The sites'
counts survive a restart of rxd."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import av
import grpc
import pytest

from semcom import client
from semcom.launch import DaemonProcess, free_port, spawn
from semcom.pb.v1 import (
    channel_pb2,
    channel_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    sites_pb2,
    sites_pb2_grpc,
    transmitter_pb2,
    transmitter_pb2_grpc,
)
from tests.fixtures.video import cut_video

pytestmark = pytest.mark.slow

SITES = ("site-1", "site-2", "site-3")
VIA_CHANNEL = "site-2"
T = TypeVar("T")


def _wait(holds: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not holds():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _sites(address: str) -> dict[str, sites_pb2.SiteInfo]:
    stub = sites_pb2_grpc.SitesStub(client.open_channel(address))
    return {s.site_id: s for s in stub.List(sites_pb2.ListSitesRequest(), timeout=10).sites}


def _spawn_rxd(work: Path, port: int) -> DaemonProcess:
    args = ["--listen", f"127.0.0.1:{port}", "--index", str(work / "index.db")]
    args += ["--set", "http.enabled=false", "--set", "metrics.enabled=false", "--set", "server.grace_s=2"]
    return spawn("rxd", args, work)


def _parallel(fn: Callable[[str], T], sites: Sequence[str]) -> list[T]:
    with ThreadPoolExecutor(len(sites)) as pool:
        return list(pool.map(fn, sites))


def _txd_start(tmp: Path, site: str, rxd_port: int, channel_port: int) -> Callable[[], DaemonProcess]:
    """A camera site's txd in a folder of its own, straight to rxd or (VIA_CHANNEL) through channel-sim."""
    work = tmp / site
    work.mkdir()
    up = f"127.0.0.1:{channel_port if site == VIA_CHANNEL else rxd_port}"
    args = ["--listen", "127.0.0.1:0", "--upstream", up, "--mcs", "qpsk/ldpc_r12"]
    args += ["--set", f"link.site_id={site}", "--set", "link.batch_delay_s=0.05"]
    args += ["--set", f"clips.dir={work / 'clips'}", "--set", "metrics.enabled=false"]
    return lambda: spawn("txd", args, work)


def _ingest(txd: DaemonProcess, video: Path, stream_id: str) -> transmitter_pb2.IngestReply:
    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(txd.address))
    return client.ingest_file(stub, video, stream_id=stream_id, location_id=1, timeout_s=120)


@pytest.mark.timeout(300)
def test_three_sites_into_one_receiver_clips_come_back_over_each_backhaul(
    tmp_path: Path, shared_data: Path
) -> None:
    video = tmp_path / "clip.mp4"
    cut_video(shared_data / "videos" / "tud_campus.mp4", video, 3.0)
    rxd_port = free_port()
    daemons: list[DaemonProcess] = []
    try:
        # All five start at once (their models load in parallel); each address is known beforehand.
        channel_port = free_port()
        chain = json.dumps([{"kind": "awgn", "snr_db": 15.0}])
        channel_args = ["--listen", f"127.0.0.1:{channel_port}", "--upstream", f"127.0.0.1:{rxd_port}"]
        channel_args += ["--chain", chain, "--seed", "3", "--set", "server.grace_s=2"]
        starts: dict[str, Callable[[], DaemonProcess]] = {
            "rxd": lambda: _spawn_rxd(tmp_path, rxd_port),
            "channel-sim": lambda: spawn("channel-sim", channel_args, tmp_path),
            **{site: _txd_start(tmp_path, site, rxd_port, channel_port) for site in SITES},
        }

        def start(name: str) -> DaemonProcess:
            daemon = starts[name]()
            daemons.append(daemon)  # at once: one that fails to start leaves no other one running
            return daemon

        started = dict(zip(starts, _parallel(start, list(starts)), strict=True))
        rxd, channel = started["rxd"], started["channel-sim"]
        txds = {site: started[site] for site in SITES}
        _wait(
            lambda: (
                len(_sites(rxd.address)) == 3 and all(s.backhaul_up for s in _sites(rxd.address).values())
            ),
            "the three backhauls did not open",
        )
        # The three sites analyse their video at once, as real sites would.
        replies = _parallel(lambda site: _ingest(txds[site], video, f"cam-{site}"), SITES)
        sent = {site: reply.records_sent for site, reply in zip(SITES, replies, strict=True)}
        assert all(sent.values()), sent
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(rxd.address))
        total = sum(sent.values())
        _wait(
            lambda: rx.Stats(receiver_pb2.StatsRequest(), timeout=10).records_indexed >= total,
            f"{total} records not indexed",
            90,
        )

        sites = _sites(rxd.address)
        for site in SITES:
            info = sites[site]
            assert info.link_up and info.backhaul_up and list(info.stream_ids) == [f"cam-{site}"]
            assert info.records_indexed == sent[site] and info.info_bits > 0 and info.last_record_at_s > 0
            reply = client.query(rx, text="a person", stream_id=f"cam-{site}", top_k=1)
            assert reply.hits and reply.hits[0].record.stream_id == f"cam-{site}"
            clip = tmp_path / f"{site}.mp4"
            size = client.fetch_clip(rx, reply.hits[0].clip, clip)
            assert size > 1000
            with av.open(str(clip)) as box:
                assert sum(1 for _ in box.decode(video=0)) >= 10  # a playable clip of this site's video
        stats = rx.Stats(receiver_pb2.StatsRequest(), timeout=10)
        assert stats.clip_bytes_fetched == sum((tmp_path / f"{s}.mp4").stat().st_size for s in SITES)
        # Only site-2's backhaul crosses channel-sim: its clip passed through as backward-channel bytes.
        ch = channel_pb2_grpc.ChannelAdminStub(client.open_channel(channel.address))
        ch_stats = ch.GetStats(channel_pb2.GetStatsRequest(), timeout=10)
        assert ch_stats.backhaul_bytes >= (tmp_path / f"{VIA_CHANNEL}.mp4").stat().st_size
        assert ch_stats.backhaul_requests == 1 and ch_stats.bursts_forwarded > 0

        # `semcom status` lists the sites with their link state.
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from semcom.cli import main; raise SystemExit(main())",
                "status",
                "--rxd",
                rxd.address,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for site in SITES:
            assert f"site {site}: link up, backhaul up, streams cam-{site}," in out, out

        # A restart of rxd (same port): the sites' counts come back from the index, and each site's
        # link and backhaul reopen on their own.
        assert rxd.stop() == 0
        daemons.remove(rxd)
        rxd = _spawn_rxd(tmp_path, rxd_port)
        daemons.append(rxd)
        _wait(
            lambda: all(s.link_up and s.backhaul_up for s in _sites(rxd.address).values()),
            "the sites did not reconnect",
            60,
        )
        again = _sites(rxd.address)
        for site in SITES:
            assert again[site].records_indexed == sent[site]
            assert again[site].info_bits >= sites[site].info_bits
        status = transmitter_pb2_grpc.TransmitterStub(client.open_channel(txds["site-1"].address))
        assert status.Status(transmitter_pb2.StatusRequest(), timeout=10).site_id == "site-1"
        # In data-flow order: the sites first (each delivers what it accepted), then channel-sim, then rxd.
        order = [*txds.values(), channel, rxd]
        codes = {f"{d.name}-{i}": d.stop() for i, d in enumerate(order)}
        daemons.clear()
        assert set(codes.values()) == {0}, codes
    except grpc.RpcError:
        for d in daemons:
            print(d.name, d.log_tail(), file=sys.stderr)
        raise
    finally:
        for d in reversed(daemons):
            d.stop()
