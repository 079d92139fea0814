"""`semcom demo`: the main job end to end on loopback, with the embedded defaults."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import grpc
from tqdm import tqdm

from semcom import client
from semcom.data import demo_video
from semcom.launch import loopback_stack
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2, transmitter_pb2_grpc

# Records an external perception system (an NVR, say) would announce for the demo video; the transmitter's
# own perception replaces them when it is configured.
EXAMPLE_PEOPLE = [
    {
        "gender": "male",
        "upper_color": "white",
        "sleeve": "long",
        "lower_color": "black",
        "lower_length": "long",
        "shoe_color": "black",
    },
    {
        "gender": "female",
        "upper_color": "red",
        "sleeve": "short",
        "lower_color": "blue",
        "lower_length": "long",
        "shoe_color": "white",
    },
    {
        "gender": "male",
        "upper_color": "black",
        "sleeve": "long",
        "lower_color": "blue",
        "lower_length": "long",
        "shoe_color": "black",
    },
    {
        "gender": "female",
        "upper_color": "white",
        "sleeve": "long",
        "lower_color": "black",
        "lower_length": "short",
        "shoe_color": "black",
    },
]
EXAMPLE_QUERIES = [
    {"upper_color": "white", "sleeve": "long", "lower_color": "black"},
    {"gender": "female"},
    {"lower_color": "blue", "shoe_color": "black"},
]


def run_demo(args: argparse.Namespace) -> int:
    video = Path(args.video) if args.video else demo_video()
    print(f"video: {video} ({video.stat().st_size / 1e6:.1f} MB)")
    chain = [{"kind": "awgn", "snr_db": args.snr_db}]
    workdir: Path = args.workdir
    with loopback_stack(workdir, chain=chain, mcs=args.mcs) as stack:
        print(
            f"txd {stack.txd.address} -> channel-sim {stack.channel.address} (awgn {args.snr_db} dB) "
            f"-> rxd {stack.rxd.address}; logs in {workdir}"
        )
        tx = transmitter_pb2_grpc.TransmitterStub(client.open_channel(stack.txd.address))
        rx = receiver_pb2_grpc.ReceiverStub(client.open_channel(stack.rxd.address))
        stream_id = "cam-1"
        with tqdm(total=video.stat().st_size, unit="B", unit_scale=True, desc="ingest") as bar:
            reply = client.ingest_file(tx, video, stream_id=stream_id, location_id=1, on_bytes=bar.update)
        print(f"txd decoded {reply.frames_decoded} frames, {reply.duration_s:.1f} s of video")
        t0 = time.time()
        print(f"announcing {len(EXAMPLE_PEOPLE)} records as an external perception system would")
        for i, fields in enumerate(EXAMPLE_PEOPLE):
            client.announce(
                tx, stream_id=stream_id, fields=fields, track_id=i + 1, location_id=1, time_s=t0 + 5.0 * i
            )
        _wait_indexed(rx, len(EXAMPLE_PEOPLE))
        for filters in EXAMPLE_QUERIES:
            print(f"\nquery {filters}")
            for hit in client.query(rx, filters=filters).hits:
                print("  " + client.format_hit(hit))
        status = tx.Status(transmitter_pb2.StatusRequest(), timeout=10)
        video_bits = video.stat().st_size * 8
        print(
            f"\nsemantic traffic: {status.info_bits_sent} information bits in {status.bursts_sent} bursts, "
            f"{status.channel_symbols_sent} channel symbols ({args.mcs}); the video is {video_bits} bits "
            f"({video_bits / max(status.info_bits_sent, 1):,.0f}x more)"
        )
        _try_clip(rx, stream_id, t0, workdir / "clip.mp4")
        if args.keep_running:
            print("daemons running; press Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        codes = stack.stop()
    print(f"stopped: {codes}")
    return 0 if all(c == 0 for c in codes.values()) else 1


def _wait_indexed(rx: receiver_pb2_grpc.ReceiverStub, n: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = rx.Stats(receiver_pb2.StatsRequest(), timeout=5)
        if stats.records_indexed + stats.records_failed >= n:
            print(f"rxd indexed {stats.records_indexed} records ({stats.records_failed} failed on the link)")
            return
        time.sleep(0.1)
    print("rxd has not indexed every record yet")


def _try_clip(rx: receiver_pb2_grpc.ReceiverStub, stream_id: str, t0: float, out: Path) -> None:
    hit = client.query(rx, filters={"gender": "male"}, top_k=1).hits
    if not hit:
        return
    try:
        size = client.fetch_clip(rx, hit[0].clip, out)
        print(f"fetched clip {out} ({size} bytes over the backward channel)")
    except grpc.RpcError as err:
        code = err.code().name if isinstance(err, grpc.Call) else "error"
        print(f"clip fetch: {code}: {err.details() if isinstance(err, grpc.Call) else err}")
