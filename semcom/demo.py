"""`semcom demo`: the main job end to end on loopback, with the embedded default models."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import grpc

from semcom import client
from semcom.data import demo_video
from semcom.launch import free_port, loopback_stack
from semcom.pb.v1 import receiver_pb2, receiver_pb2_grpc, transmitter_pb2, transmitter_pb2_grpc

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by ./scripts/setup.sh --test (Playwright downloads none)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SCREENSHOT_QUERY = "a woman in a red top"
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
    http_port = args.http_port or free_port()  # 0: any free port, known before rxd starts
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
        shot_ok = True
        if args.screenshot is not None:
            shot_ok = _screenshot(
                f"http://127.0.0.1:{http_port}/?q={quote(SCREENSHOT_QUERY)}", args.screenshot
            )
        if args.keep_running:
            print(f"\nweb page: http://127.0.0.1:{http_port}/   (Ctrl-C stops the daemons)")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        codes = stack.stop()
    print(f"\nstopped: {codes}")
    return 0 if shot_ok and all(c == 0 for c in codes.values()) else 1


def screenshot_page(url: str, out: Path, *, chromium: str = CHROMIUM, timeout_s: float = 60.0) -> None:
    """Open the page at `url` (a search in its query string) in headless Chromium with thumbnails loading
    by themselves, play the first hit's clip, and save a PNG of the window to `out`."""
    from playwright.sync_api import sync_playwright  # a dev extra: only this command needs it

    timeout_ms = timeout_s * 1000
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.add_init_script("localStorage.setItem('semcom.autoThumbs', '1')")
            page.goto(url)
            page.wait_for_selector("li.hit", timeout=timeout_ms)
            page.locator("li.hit").first.locator("button.fetch").click()
            page.wait_for_function(
                "() => { const v = document.querySelector('li.hit video'); return v && v.readyState >= 2; }",
                timeout=timeout_ms,
            )
            page.wait_for_function(
                "() => document.querySelectorAll('li.hit .thumb img, li.hit .thumb .nothumb').length >= "
                "Math.min(5, document.querySelectorAll('li.hit').length)",
                timeout=timeout_ms,
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            browser.close()


def _screenshot(url: str, out: Path) -> bool:
    chromium = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if chromium is None:
        print("screenshot: no chromium found (./scripts/setup.sh --test installs Debian's)")
        return False
    try:
        screenshot_page(url, out, chromium=chromium)
    except Exception as err:  # a failed screenshot is reported, the demo's results stand
        print(f"screenshot failed: {type(err).__name__}: {err}")
        return False
    print(f"screenshot of the web page ({url}) written to {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return True


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
