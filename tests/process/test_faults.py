"""Faults with real daemons and real signals: SIGKILL of each daemon at seeded points during an ingest, a
cancelled upload, a frozen peer, a full disk under the outbox. Each compares the index with a clean run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from semcom import client
from semcom.burst import build_burst
from semcom.codec import Sealing, SiteKey, encode_records
from semcom.launch import spawn
from semcom.pb.v1 import (
    link_pb2,
    link_pb2_grpc,
    receiver_pb2,
    receiver_pb2_grpc,
    transmitter_pb2,
    transmitter_pb2_grpc,
)
from semcom.record import Record
from semcom.schema import SchemaRegistry
from tests.fixtures.faults import T0_S, Announcer, Chain, compare_index, fields_of

pytestmark = pytest.mark.slow

# Kill points per daemon: 10 by default (each rxd restart reloads its embedder: ~3 min for rxd alone on
# 2 cores); SEMCOM_FAULT_KILLS sets another count, e.g. 3 for a quick run.
KILLS = int(os.environ.get("SEMCOM_FAULT_KILLS", "10"))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition()` (a state of other processes, which no call here can wait on) until true."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def drained(chain: Chain) -> bool:
    try:
        status = chain.status()
    except grpc.RpcError:
        return False
    return status.records_queued == 0 and status.link_up


@pytest.mark.parametrize("victim", ["txd", "rxd", "channel-sim"])
@pytest.mark.timeout(900)
def test_sigkill_at_seeded_points_loses_duplicates_and_changes_nothing(tmp_path: Path, victim: str) -> None:
    rng = random.Random(f"kill-{victim}")  # seeded: the same kill points every run
    chain = Chain(tmp_path, txd_set=["link.ack_timeout_s=3"])
    chain.start_all()
    announcer = Announcer(chain.address("txd"), "cam-f", pace_s=0.01)
    try:
        announcer.start()
        for _ in range(KILLS):
            # The kill point: a seeded pause into the ingest (fault timing, not synchronisation).
            time.sleep(rng.uniform(0.1, 1.0))
            chain.kill(victim)
            chain.start(victim)
        time.sleep(rng.uniform(0.1, 0.5))
        announcer.stopped.set()
        announcer.join(30)
        wait_until(
            lambda: drained(chain), 120, f"txd's outbox did not drain: {chain.procs['txd'].log_tail()}"
        )
    finally:
        announcer.stopped.set()
        codes = chain.stop_all()
    assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}
    got = compare_index(tmp_path / "index.db", "cam-f", announcer)
    print(f"SIGKILL {victim} x{KILLS}: {got}")
    assert got.accepted >= 100
    assert (got.lost, got.duplicated, got.changed, got.invented, got.id_gaps) == (0, 0, 0, 0, 0), got
    # Every record indexed is one txd acknowledged, or one whose call the kill cut short after it was stored.
    assert got.indexed == got.accepted + got.in_doubt_indexed


VIDEO = Path("/work/shared/data/videos/tud_campus.mp4")


def _upload(
    stub: transmitter_pb2_grpc.TransmitterStub, stream_id: str, chunks: int, hold: threading.Event
) -> grpc.Future[transmitter_pb2.IngestReply]:
    """An Ingest call that sends its header and `chunks` chunks of 64 KiB, then stalls until `hold` is set."""

    def parts() -> Iterator[transmitter_pb2.IngestRequest]:
        yield transmitter_pb2.IngestRequest(header=transmitter_pb2.IngestHeader(stream_id=stream_id))
        data = VIDEO.read_bytes() if VIDEO.exists() else bytes(1 << 20)
        for k in range(chunks):
            yield transmitter_pb2.IngestRequest(chunk=data[k << 16 : (k + 1) << 16])
        hold.wait(60)

    future: grpc.Future[transmitter_pb2.IngestReply] = stub.Ingest.future(parts(), timeout=60)
    return future


def _stream(chain: Chain, stream_id: str) -> transmitter_pb2.StreamStatus | None:
    return next((s for s in chain.status().streams if s.stream_id == stream_id), None)


def _state(chain: Chain, stream_id: str) -> str:
    found = _stream(chain, stream_id)
    return found.state if found is not None else ""


def test_a_cancelled_upload_fails_its_stream_and_frees_the_id_at_once(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.start_all()
    hold = threading.Event()
    try:
        stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(chain.address("txd")))
        first = _upload(stub, "cam-u", 3, hold)
        wait_until(
            lambda: (s := _stream(chain, "cam-u")) is not None and s.bytes_received > 0, 20, "no bytes"
        )
        first.cancel()  # the uploader hangs up mid-stream
        wait_until(lambda: _state(chain, "cam-u") == "failed", 5, "stream still receiving")
        status = _stream(chain, "cam-u")
        assert status is not None and status.error == "upload cancelled"
        assert not list((tmp_path / "clips" / ".incoming").iterdir())  # its spool file is gone
        second = _upload(stub, "cam-u", 1, hold)  # the same id, at once: taken, not "already ingested"
        wait_until(lambda: _state(chain, "cam-u") == "receiving", 5, "id refused")
        second.cancel()
        wait_until(lambda: _state(chain, "cam-u") == "failed", 5, "second still receiving")
    finally:
        hold.set()
        codes = chain.stop_all()
    assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}


def _link_up_per_semcom_status(chain: Chain) -> bool:
    out = subprocess.run(
        [str(Path(".venv/bin/semcom").resolve()), "status", "--txd", chain.address("txd")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return bool(json.loads(out.stdout).get("link_up", False))


def test_a_frozen_peer_is_detected_within_the_ack_timeout_and_nothing_is_lost(tmp_path: Path) -> None:
    chain = Chain(tmp_path, txd_set=["link.ack_timeout_s=2"])
    chain.start_all()
    before = Announcer(chain.address("txd"), "cam-y", limit=10)
    after = Announcer(chain.address("txd"), "cam-z", pace_s=0.05, limit=50)
    try:
        before.run()  # in this thread, to the end
        wait_until(lambda: drained(chain), 30, "link never up")
        assert _link_up_per_semcom_status(chain)
        chain.procs["channel-sim"].proc.send_signal(signal.SIGSTOP)  # frozen: sockets open, nothing moves
        frozen_at = time.monotonic()
        after.start()  # records keep coming: txd takes them into its outbox, their bursts go unanswered
        wait_until(lambda: not chain.status().link_up, 10, "the link still counts up")
        detected_s = time.monotonic() - frozen_at
        assert not _link_up_per_semcom_status(chain)
        after.join(30)
        assert chain.status().records_queued > 0
        chain.procs["channel-sim"].proc.send_signal(signal.SIGCONT)
        wait_until(lambda: drained(chain), 60, "nothing flowed after the peer thawed")
    finally:
        chain.procs["channel-sim"].proc.send_signal(signal.SIGCONT)
        codes = chain.stop_all()
    print(f"frozen channel-sim detected after {detected_s:.1f} s (ack_timeout_s=2)")
    # Detected by the ack timeout: 2 s after the first unanswered burst, plus a batch delay and a poll.
    assert detected_s <= 2 + 1.5
    assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}
    for announcer in (before, after):
        got = compare_index(tmp_path / "index.db", announcer.stream_id, announcer)
        assert (got.faults, got.indexed) == (0, announcer.limit) and not announcer.in_doubt, got


def test_keepalive_finds_a_frozen_peer_while_no_burst_is_in_flight(tmp_path: Path) -> None:
    # No record in flight, so no ack timeout: only the HTTP/2 pings can notice (10 s + 2 s unanswered).
    chain = Chain(tmp_path, txd_set=["link.keepalive_s=10", "link.keepalive_timeout_s=2"])
    chain.start_all()
    try:
        stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(chain.address("txd")))
        client.announce(stub, stream_id="cam-k", fields={"gender": "male"})
        wait_until(lambda: drained(chain), 30, "link never up")
        chain.procs["channel-sim"].proc.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        wait_until(lambda: not chain.status().link_up, 30, "keepalive did not notice the frozen peer")
        detected_s = time.monotonic() - frozen_at
        chain.procs["channel-sim"].proc.send_signal(signal.SIGCONT)
    finally:
        chain.procs["channel-sim"].proc.send_signal(signal.SIGCONT)
        codes = chain.stop_all()
    print(f"idle link, frozen channel-sim detected by keepalive after {detected_s:.1f} s (10 s + 2 s)")
    assert detected_s <= 10 + 2 + 2
    assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}


SITECUSTOMIZE = """
import os, resource, signal
_limit = int(os.environ.get("SEMCOM_TEST_FSIZE", "0"))
if _limit:  # writes past the limit fail with EFBIG (SIGXFSZ ignored), as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (_limit, _limit))
"""


def test_a_full_disk_under_the_outbox_refuses_records_and_acknowledges_only_stored_ones(
    tmp_path: Path,
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    chain = Chain(tmp_path / "run")
    chain.start("rxd")
    chain.start("channel-sim")
    # Only txd's files are limited (outbox, log, clips): to 300 KiB, which the outbox's log fills soon.
    env = {"PYTHONPATH": str(hook), "SEMCOM_TEST_FSIZE": str(300 * 1024)}
    chain.procs["txd"] = spawn("txd", chain.args("txd"), chain.workdir, env=env)
    announcer = Announcer(chain.address("txd"), "cam-d", pace_s=0.01, limit=200)
    try:
        announcer.run()  # in this thread: to the end
        wait_until(lambda: drained(chain), 60, "accepted records were not all acknowledged")
    finally:
        codes = chain.stop_all()
    refused = {announcer.errors[i] for i in announcer.in_doubt}
    print(f"full disk: {len(announcer.accepted)} accepted, {len(announcer.in_doubt)} refused: {refused}")
    assert 5 <= len(announcer.accepted) < 200 and announcer.in_doubt
    assert all(
        code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and "outbox" in detail
        and "cannot store the record" in detail
        for code, detail in refused
    ), refused
    assert codes["rxd"] == 0 and codes["channel-sim"] == 0
    got = compare_index(chain.workdir / "index.db", "cam-d", announcer)
    # Every record acknowledged to the caller is indexed; none refused is (it was never stored).
    assert (got.faults, got.in_doubt_indexed, got.indexed) == (0, 0, len(announcer.accepted)), got


def _ingest(address: str, stream_id: str) -> transmitter_pb2.IngestReply:
    """Upload the clip with a fixed start time (so that two uploads' records can be compared)."""

    def parts() -> Iterator[transmitter_pb2.IngestRequest]:
        header = transmitter_pb2.IngestHeader(stream_id=stream_id, start_time_s=T0_S)
        yield transmitter_pb2.IngestRequest(header=header)
        data = VIDEO.read_bytes()
        for k in range(0, len(data), 1 << 16):
            yield transmitter_pb2.IngestRequest(chunk=data[k : k + (1 << 16)])

    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(address))
    reply: transmitter_pb2.IngestReply = stub.Ingest(parts(), timeout=300)
    return reply


def _ingest_until_killed(address: str, finished: threading.Event) -> None:
    """One try of the uploader; `finished` is set when it went through (the uploader then stops)."""
    with contextlib.suppress(grpc.RpcError):  # the kill cuts the call: the uploader tries again later
        _ingest(address, "cam-v")
        finished.set()


def _records(index: Path, stream_id: str) -> list[tuple[int, int, float, str]]:
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT record_id, track_id, time_s, fields FROM records WHERE stream_id = ? ORDER BY record_id",
            (stream_id,),
        ).fetchall()
    return [(int(r), int(t), float(s), f) for r, t, s, f in rows]


@pytest.mark.skipif(not VIDEO.exists(), reason="needs the shared tud_campus.mp4")
@pytest.mark.timeout(900)
def test_sigkill_txd_during_video_uploads_resumes_without_duplicates(tmp_path: Path) -> None:
    rng = random.Random("kill-upload")
    chain = Chain(tmp_path)
    chain.start_all()
    try:
        t0 = time.monotonic()
        clean = _ingest(chain.address("txd"), "clean")
        clean_s = time.monotonic() - t0  # with the models' first load, as after every restart below
        # An uploader sends the video again until one try goes through, then stops; a try that went
        # through before its kill point is a finished upload (sending it once more would be a new one),
        # and the later kills hit a txd that is still delivering its records.
        finished = threading.Event()
        cut = 0
        for _ in range(KILLS):
            upload = None
            if not finished.is_set():
                upload = threading.Thread(
                    target=_ingest_until_killed, args=(chain.address("txd"), finished), daemon=True
                )
                upload.start()
            time.sleep(rng.uniform(0.05, clean_s))  # the kill point (fault timing, not synchronisation)
            chain.kill("txd")
            if upload is not None:
                upload.join(30)
                cut += not finished.is_set()
            chain.start("txd")
        if not finished.is_set():
            again = _ingest(chain.address("txd"), "cam-v")  # the uploader's last try, to the end
            assert again.records_sent == clean.records_sent
        wait_until(lambda: drained(chain), 60, "txd's outbox did not drain")
    finally:
        codes = chain.stop_all()
    assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}
    want = _records(tmp_path / "index.db", "clean")
    got = _records(tmp_path / "index.db", "cam-v")
    print(
        f"video upload, txd killed x{KILLS} ({cut} tries cut short): clean {len(want)} records, "
        f"after the kills {len(got)}"
    )
    assert cut >= 1  # at least one upload was resumed after a crash
    assert clean.records_sent == len(want) >= 5
    assert [r[0] for r in got] == list(range(1, len(got) + 1))  # no id skipped or reused
    assert sorted(r[1:] for r in got) == sorted(r[1:] for r in want)  # 0 lost, 0 duplicated, 0 changed


def _forged(stream_id: str, record_id: int, *, key: bytes | None, flip: bool = False) -> link_pb2.Burst:
    """A well-formed burst for rxd's Link port, as anyone who reaches it can build one."""
    rec = Record("person/1", stream_id, 9, record_id, T0_S, 7, {"gender": "female", "upper_color": "green"})
    frame = encode_records([rec], SchemaRegistry.builtin().get("person/1"))
    if key is not None:
        frame = Sealing(SiteKey(key), tag_bytes=16).seal(frame, stream_id=stream_id, epoch=1, sequence=99)
    if flip:  # one payload bit, the CRC made to fit again
        body = bytearray(frame[:-4])
        body[13] ^= 0x01
        frame = bytes(body) + zlib.crc32(body).to_bytes(4, "big")
    burst = build_burst(
        frame,
        stream_id=stream_id,
        sequence=99,
        schema_id="person/1",
        kind=link_pb2.PAYLOAD_KIND_RECORDS,
        record_count=1,
        mcs=None,
    )
    burst.header.site_id, burst.header.epoch = "site-f", 1
    return burst


def test_forged_bursts_at_rxd_are_refused_counted_and_change_nothing(tmp_path: Path) -> None:
    chain = Chain(tmp_path)
    chain.start_all()
    try:
        announcer = Announcer(chain.address("txd"), "cam-f", limit=3)
        announcer.run()
        wait_until(lambda: drained(chain), 30, "records not delivered")
        real_key = chain.key.read_bytes()
        forged = [
            _forged("cam-f", 2, key=None),  # unsealed, overwriting cam-f#2
            _forged("cam-f", 2, key=bytes(32)),  # sealed under a key that is not the site's
            _forged("cam-f", 2, key=real_key, flip=True),  # the site's key, one bit altered
            _forged("fake-cam", 1, key=None),  # a camera that does not exist
        ]
        with grpc.insecure_channel(chain.address("rxd")) as channel:
            answers = list(link_pb2_grpc.LinkStub(channel).Transmit(iter(forged), timeout=10))
        stub = receiver_pb2_grpc.ReceiverStub(client.open_channel(chain.address("rxd")))
        kept = stub.GetRecord(receiver_pb2.GetRecordRequest(stream_id="cam-f", record_id=2), timeout=5)
        stats = stub.Stats(receiver_pb2.StatsRequest(), timeout=5)
    finally:
        codes = chain.stop_all()
    verdicts = [a.status for a in answers if a.sequence == 99]
    assert verdicts == [link_pb2.ACK_STATUS_UNAUTHENTICATED] * 4, answers
    assert {f.name: f.value for f in kept.record.fields} == {
        **{n: "unknown" for n in ("lower_length", "shoe_color")},
        **fields_of(1),
    }
    assert stats.records_indexed == 3 and stats.records_failed == 4
    assert "fake-cam" not in {s.stream_id for s in stats.streams if s.records_indexed}
    assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}


@pytest.mark.skipif(not VIDEO.exists(), reason="needs the shared tud_campus.mp4")
@pytest.mark.timeout(900)
def test_sigkill_txd_while_it_analyses_a_file_source_sends_each_record_once(tmp_path: Path) -> None:
    rng = random.Random("kill-source")
    source = [{"stream_id": "src", "url": str(VIDEO)}]
    chain = Chain(tmp_path, txd_set=[f"sources={json.dumps(source)}"])
    chain.start_all()  # txd starts analysing the file at once
    try:
        t0 = time.monotonic()
        _ingest(chain.address("txd"), "clean")  # the same video as an upload, for comparison
        clean_s = time.monotonic() - t0
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.05, clean_s))  # the kill point (fault timing, not synchronisation)
            chain.kill("txd")
            chain.start("txd")  # the source is analysed again from its start
        wait_until(lambda: _state(chain, "src") == "done" and drained(chain), 120, "source not done")
    finally:
        codes = chain.stop_all()
    assert codes == {"txd": 0, "channel-sim": 0, "rxd": 0}

    def relative(rows: list[tuple[int, int, float, str]]) -> list[tuple[int, float, str]]:
        first = min(r[2] for r in rows)
        return sorted((track, round(t - first, 1), fields) for _, track, t, fields in rows)

    want = _records(tmp_path / "index.db", "clean")
    got = _records(tmp_path / "index.db", "src")
    print(f"file source, txd killed x{KILLS}: clean {len(want)} records, source {len(got)}")
    assert len(want) >= 5 and [r[0] for r in got] == list(range(1, len(got) + 1))
    assert relative(got) == relative(want)  # 0 lost, 0 duplicated, 0 changed
