"""Blocking client helpers used by the CLI, the demo and the benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import grpc
from tqdm import tqdm

from semcom.auth import with_token
from semcom.config import ClientTlsConfig
from semcom.pb.v1 import (
    common_pb2,
    receiver_pb2,
    receiver_pb2_grpc,
    sites_pb2,
    transmitter_pb2,
    transmitter_pb2_grpc,
)
from semcom.record import Record
from semcom.server import channel_options
from semcom.tls import open_sync_channel

CHUNK_BYTES = 256 * 1024


def open_channel(
    address: str,
    max_message_bytes: int = 16 * 1024 * 1024,
    *,
    tls: ClientTlsConfig | None = None,
    token: str = "",
) -> grpc.Channel:
    """A blocking channel: TLS (mTLS with a client certificate) when `tls.enabled`, and `token` sent as
    `authorization: Bearer ...` on every call when given."""
    channel = open_sync_channel(address, tls, channel_options(max_message_bytes))
    return with_token(channel, token)


def ingest_file(
    stub: transmitter_pb2_grpc.TransmitterStub,
    path: Path,
    *,
    stream_id: str,
    location_id: int = 0,
    container: str = "",
    timeout_s: float = 600.0,
    on_bytes: Callable[[int], object] | None = None,
) -> transmitter_pb2.IngestReply:
    """Stream a video file into txd's Ingest, header first, then chunks."""

    def parts() -> Iterator[transmitter_pb2.IngestRequest]:
        yield transmitter_pb2.IngestRequest(
            header=transmitter_pb2.IngestHeader(
                stream_id=stream_id, location_id=location_id, container=container, start_time_s=time.time()
            )
        )
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                if on_bytes is not None:
                    on_bytes(len(chunk))
                yield transmitter_pb2.IngestRequest(chunk=chunk)

    reply: transmitter_pb2.IngestReply = stub.Ingest(parts(), timeout=timeout_s)
    return reply


def ingest_with_progress(
    stub: transmitter_pb2_grpc.TransmitterStub,
    path: Path,
    *,
    stream_id: str,
    location_id: int = 0,
    timeout_s: float = 3600.0,
    poll_s: float = 0.5,
) -> transmitter_pb2.IngestReply:
    """Upload with a byte progress bar, then show txd's analysis (frames, fps, ETA) until Ingest returns."""
    size = path.stat().st_size
    upload = tqdm(total=size, unit="B", unit_scale=True, desc=f"upload {path.name}", leave=False)
    analysis: tqdm[NoReturn] | None = None
    done = threading.Event()
    result: list[transmitter_pb2.IngestReply | BaseException] = []

    def run() -> None:
        try:
            result.append(
                ingest_file(
                    stub,
                    path,
                    stream_id=stream_id,
                    location_id=location_id,
                    timeout_s=timeout_s,
                    on_bytes=upload.update,
                )
            )
        except BaseException as err:  # re-raised on the calling thread
            result.append(err)
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while not done.wait(poll_s):
        if upload.n < size:
            continue
        st = next((s for s in _status(stub).streams if s.stream_id == stream_id), None)
        if st is None or not st.frames_total:
            continue
        if analysis is None:
            upload.close()
            analysis = tqdm(total=st.frames_total, unit="frame", desc=f"analyse {stream_id}")
        analysis.update(st.frames_decoded - analysis.n)
        analysis.set_postfix(analysed=st.frames_analysed, keyframes=st.keyframes, records=st.records_sent)
    worker.join()
    upload.close()
    if analysis is not None:
        analysis.update((analysis.total or analysis.n) - analysis.n)
        analysis.close()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _status(stub: transmitter_pb2_grpc.TransmitterStub) -> transmitter_pb2.TransmitterStatus:
    reply: transmitter_pb2.TransmitterStatus = stub.Status(transmitter_pb2.StatusRequest(), timeout=10)
    return reply


def announce(
    stub: transmitter_pb2_grpc.TransmitterStub,
    *,
    stream_id: str,
    fields: Mapping[str, str],
    schema_id: str = "",
    track_id: int = 0,
    location_id: int = 0,
    time_s: float = 0.0,
    timeout_s: float = 10.0,
) -> transmitter_pb2.AnnounceReply:
    rec = Record(
        schema_id=schema_id,
        stream_id=stream_id,
        track_id=track_id,
        record_id=0,
        time_s=time_s,
        location_id=location_id,
        fields=dict(fields),
    )
    reply: transmitter_pb2.AnnounceReply = stub.Announce(
        transmitter_pb2.AnnounceRequest(record=rec.to_pb()), timeout=timeout_s
    )
    return reply


def query(
    stub: receiver_pb2_grpc.ReceiverStub,
    *,
    text: str = "",
    filters: Mapping[str, str | Sequence[str]] | None = None,
    top_k: int = 0,
    stream_id: str = "",
    location_ids: Sequence[int] = (),
    min_probability: float = 0.0,
    schema_id: str = "",
    site_id: str = "",
    timeout_s: float = 10.0,
) -> receiver_pb2.QueryReply:
    request = receiver_pb2.QueryRequest(
        text=text,
        # A filter lists the values it accepts (OR); one string may join several with "|".
        filters=[
            receiver_pb2.FieldFilter(name=k, value=v)
            if isinstance(v, str)
            else receiver_pb2.FieldFilter(name=k, values=v)
            for k, v in (filters or {}).items()
        ],
        top_k=top_k,
        stream_id=stream_id,
        location_ids=list(location_ids),
        min_probability=min_probability,
        schema_id=schema_id,
        site_id=site_id,
    )
    reply: receiver_pb2.QueryReply = stub.Query(request, timeout=timeout_s)
    return reply


def fetch_clip(
    stub: receiver_pb2_grpc.ReceiverStub, clip: common_pb2.ClipRef, out: Path, *, timeout_s: float = 120.0
) -> int:
    """Fetch a clip through rxd's backward channel into `out`; returns the bytes written."""
    request = common_pb2.FetchClipRequest(stream_id=clip.stream_id, t0_s=clip.t0_s, t1_s=clip.t1_s)
    written = 0
    with out.open("wb") as f:
        for chunk in stub.FetchClip(request, timeout=timeout_s):
            f.write(chunk.data)
            written += len(chunk.data)
    return written


def format_hit(hit: receiver_pb2.Hit) -> str:
    rec = Record.from_pb(hit.record)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.time_s))
    attrs = ", ".join(
        f"{k}={v} ({rec.confidence[k]:.2f})" if k in rec.confidence else f"{k}={v}"
        for k, v in rec.fields.items()
    )
    desc = f' "{hit.description}"' if hit.description else ""
    why = "; ".join(f"{s.name} {s.probability:.2f}" for s in hit.slot_scores)
    ranked = f"p {hit.probability:.3f}{' = ' + why if why else ''}"
    return (
        f"[{ranked} | sim {hit.score:.3f}] {rec.stream_id}#{rec.record_id} track {rec.track_id} at {when} "
        f"loc {rec.location_id}: "
        f"{attrs}{desc} | matched {', '.join(hit.matched_slots) or '-'} | clip {hit.clip.stream_id} "
        f"{hit.clip.t0_s:.1f}..{hit.clip.t1_s:.1f}"
    )


def format_site(site: sites_pb2.SiteInfo) -> str:
    """One line per camera site, as `semcom status --rxd` prints it."""
    last = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(site.last_record_at_s))
        if site.last_record_at_s
        else "never"
    )
    return (
        f"site {site.site_id or '(unnamed)'}: link {'up' if site.link_up else 'down'}, "
        f"backhaul {'up' if site.backhaul_up else 'down'}, streams {','.join(site.stream_ids) or '-'}, "
        f"last record {last}, {site.info_bits} bits received, {site.records_indexed} records indexed, "
        f"{site.bursts_failed} bursts lost ({site.records_failed} records in them)"
    )
