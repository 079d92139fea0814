"""`semcom demo`: the main job end to end on loopback, with the embedded default models."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import grpc

from semcom import client
from semcom.data import demo_video
from semcom.launch import loopback_stack
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2, transmitter_pb2_grpc

EXAMPLE_QUERIES = [
    "the man wearing a white long-sleeved shirt, black pants and black shoes",
    "a woman in a red top",
    "someone in blue jeans",
    "person with a dark jacket and grey trousers",
]


def run_demo(args: argparse.Namespace) -> int:
    video = Path(args.video) if args.video else demo_video()
    print(f"video: {video} ({video.stat().st_size / 1e6:.1f} MB)")
    chain = [{"kind": "awgn", "snr_db": args.snr_db}]
    workdir: Path = args.workdir
    http_port = args.http_port
    with loopback_stack(
        workdir, chain=chain, mcs=args.mcs, rxd_args=["--set", f"http.listen=127.0.0.1:{http_port}"]
    ) as stack:
        print(
            f"txd {stack.txd.address} -> channel-sim {stack.channel.address} (AWGN, Es/N0 {args.snr_db} dB) "
            f"-> rxd {stack.rxd.address}; logs in {workdir}"
        )
        tx = transmitter_pb2_grpc.TransmitterStub(client.open_channel(stack.txd.address))
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(stack.rxd.address))
        t0 = time.monotonic()
        reply = client.ingest_with_progress(tx, video, stream_id="cam-1", location_id=1)
        elapsed = time.monotonic() - t0
        print(
            f"txd analysed {reply.frames_analysed} of {reply.frames_decoded} frames "
            f"({reply.duration_s:.1f} s of video) in {elapsed:.0f} s: {reply.keyframes} keyframes, "
            f"{reply.records_sent} records"
        )
        _wait_indexed(rx, reply.records_sent)
        first_hit = None
        for text in EXAMPLE_QUERIES:
            answer = client.query(rx, text=text, top_k=3)
            slots = ", ".join(f"{s.name}={s.value}" for s in answer.parsed_slots) or "none"
            print(f'\nquery "{text}"  [slots: {slots}]')
            for hit in answer.hits:
                print("  " + client.format_hit(hit))
            first_hit = first_hit or (answer.hits[0] if answer.hits else None)
        _report_bits(tx, rx, video, args.mcs)
        if first_hit is not None:
            _fetch(rx, first_hit, workdir / "clip.mp4")
        if args.keep_running:
            print(f"\nweb page: http://127.0.0.1:{http_port}/   (Ctrl-C stops the daemons)")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        codes = stack.stop()
    print(f"\nstopped: {codes}")
    return 0 if all(c == 0 for c in codes.values()) else 1


def _wait_indexed(rx: receiver_pb2_grpc.ReceiverStub, n: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = rx.Stats(receiver_pb2.StatsRequest(), timeout=5)
        if stats.records_indexed + stats.records_failed >= n:
            print(f"rxd indexed {stats.records_indexed} records ({stats.records_failed} lost on the link)")
            return
        time.sleep(0.2)
    print("rxd has not indexed every record yet")


def _report_bits(
    tx: transmitter_pb2_grpc.TransmitterStub, rx: receiver_pb2_grpc.ReceiverStub, video: Path, mcs: str
) -> None:
    status = tx.Status(transmitter_pb2.StatusRequest(), timeout=10)
    video_bits = video.stat().st_size * 8
    print(
        f"\nsemantic traffic: {status.info_bits_sent} information bits in {status.bursts_sent} bursts, "
        f"{status.channel_symbols_sent} channel symbols ({mcs}); the video itself is {video_bits:,} bits, "
        f"{video_bits / max(status.info_bits_sent, 1):,.0f} times more"
    )


def _fetch(rx: receiver_pb2_grpc.ReceiverStub, hit: receiver_pb2.Hit, out: Path) -> None:
    try:
        size = client.fetch_clip(rx, hit.clip, out)
    except grpc.RpcError as err:
        code = err.code().name if isinstance(err, grpc.Call) else "error"
        print(f"clip fetch failed: {code}: {err.details() if isinstance(err, grpc.Call) else err}")
        return
    stats = rx.Stats(receiver_pb2.StatsRequest(), timeout=5)
    print(
        f"fetched the first hit's clip to {out} ({size:,} bytes over the backward channel, "
        f"{stats.clip_bytes_fetched:,} clip bytes in all, counted apart from the semantic link)"
    )
