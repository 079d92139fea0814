"""The daemons as real processes: SIGTERM drain mid-stream loses nothing, a restart keeps the index."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from semcom import client
from semcom.launch import loopback_stack, spawn
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2_grpc

pytestmark = pytest.mark.slow

FIELDS = {"gender": "female", "upper_color": "blue", "sleeve": "long", "lower_color": "grey"}


def _announce_until_refused(address: str, accepted: list[int], stop: threading.Event) -> None:
    """Announce records as fast as txd takes them; remember each one txd accepted."""
    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(address))
    i = 0
    while not stop.is_set():
        try:
            reply = client.announce(stub, stream_id="cam-p", fields=FIELDS, track_id=i % 4000, timeout_s=5)
        except grpc.RpcError:
            return  # the server stopped taking calls: from here on nothing was accepted
        accepted.append(reply.record_id)
        i += 1


def test_sigterm_mid_stream_drains_and_loses_nothing(tmp_path: Path) -> None:
    chain = [{"kind": "awgn", "snr_db": 15.0}]
    with loopback_stack(tmp_path, chain=chain, mcs="qpsk/ldpc_r12") as stack:
        accepted: list[int] = []
        stop = threading.Event()
        worker = threading.Thread(target=_announce_until_refused, args=(stack.txd.address, accepted, stop))
        worker.start()
        deadline = time.monotonic() + 30
        while len(accepted) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(accepted) >= 300, stack.txd.log_tail()
        stack.txd.proc.send_signal(signal.SIGTERM)  # mid-stream: the announcer is still sending
        assert stack.txd.proc.wait(60) == 0, stack.txd.log_tail()
        stop.set()
        worker.join(10)
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(stack.rxd.address))
        stats = rx.Stats(receiver_pb2.StatsRequest(), timeout=5)
        assert stats.records_failed == 0
        assert stats.records_indexed == len(accepted), stack.txd.log_tail()
        assert accepted == list(range(1, len(accepted) + 1))
        last = rx.GetRecord(
            receiver_pb2.GetRecordRequest(stream_id="cam-p", record_id=accepted[-1]), timeout=5
        )
        assert {f.name: f.value for f in last.record.fields}["upper_color"] == "blue"
        codes = stack.stop()
    assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}
    assert "draining" in stack.txd.log_path.read_text()


def test_index_survives_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A relative work folder, as `semcom demo` uses by default (var/demo).
    monkeypatch.chdir(tmp_path.parent)
    with loopback_stack(Path(tmp_path.name), mcs="bytes") as stack:
        tx = transmitter_pb2_grpc.TransmitterStub(client.open_channel(stack.txd.address))
        for track in range(5):
            client.announce(tx, stream_id="cam-r", fields=FIELDS, track_id=track)
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(stack.rxd.address))
        deadline = time.monotonic() + 20
        while rx.Stats(receiver_pb2.StatsRequest(), timeout=5).records_indexed < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    rxd = spawn("rxd", ["--listen", "127.0.0.1:0", "--index", str(tmp_path / "index.db")], tmp_path)
    try:
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(rxd.address))
        reply = client.query(rx, filters={"upper_color": "blue"}, top_k=100)
        assert sorted(h.record.track_id for h in reply.hits) == [0, 1, 2, 3, 4]
    finally:
        assert rxd.stop() == 0


def test_help_and_bad_config_exit_cleanly() -> None:
    for module in ("txd", "rxd", "channel_sim"):
        out = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "--check-config" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "txd", "--set", "link.mcs=morse"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "link.mcs" in bad.stderr
