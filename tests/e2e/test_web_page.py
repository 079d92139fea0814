"""The web page in a real headless Chromium: search, read the hits, fetch a clip and play it in the page."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from semcom import client
from semcom.pb.v1 import transmitter_pb2_grpc
from tests.conftest import Chain
from tests.fixtures.link import PEOPLE, wait_indexed

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SEMCOM_CHROMIUM", "/usr/bin/chromium")


@pytest.mark.asyncio
async def test_search_and_play_clip(chain: Chain, shared_data: Path, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: run ./scripts/setup.sh --test (installs Debian's chromium)")
    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(chain.txd_address))
    video = shared_data / "videos" / "tud_campus.mp4"
    started = time.time()
    await asyncio.to_thread(client.ingest_file, stub, video, stream_id="cam-web", location_id=4)
    seen_at = started + 1.0  # inside the 2.8 s of stored video, however long the analysis took
    for i, fields in enumerate(PEOPLE):
        await asyncio.to_thread(
            client.announce,
            stub,
            stream_id="cam-web",
            fields=fields,
            track_id=i + 1,
            location_id=4,
            time_s=seen_at,
        )
    await wait_indexed(chain.rxd_address, 3)
    assert chain.rxd.http is not None
    url = f"http://127.0.0.1:{chain.rxd.http.port}/"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        page = await browser.new_page()
        await page.goto(url)
        await page.fill("#q", "woman with a red shirt")
        await page.click("button[type=submit]")
        await page.wait_for_selector("li.hit")
        first = page.locator("li.hit").first
        assert "red" in (await first.locator(".desc").inner_text())
        assert "matched gender, upper_color" in (await first.locator(".meta").inner_text())
        assert "hits" in (await page.inner_text("#status"))
        assert "upper_color: red" in (await page.inner_text("#slots"))
        last = page.locator("li.hit").last
        assert "differs: gender" in (await last.locator(".meta").inner_text())
        await first.locator("button.fetch").click()
        await first.locator("video").wait_for()
        # The clip arrived over the backward channel and the browser can decode it.
        ready = await page.wait_for_function(
            "() => { const v = document.querySelector('li.hit video'); return v && v.readyState >= 2; }",
            timeout=30000,
        )
        assert ready
        assert "KiB over the backward channel" in (await first.locator("button.fetch").inner_text())
        await page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        # A slot may list several values: its chip shows them all.
        await page.fill("#q", "woman in a red or white top")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#slots span:has-text('upper_color: red or white')")
        await page.fill("#q", "")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#status.error")
        assert "empty query" in (await page.inner_text("#status"))
        await browser.close()
    shutil.copy(tmp_path / "page.png", Path(os.environ.get("SEMCOM_SCREENSHOT", tmp_path / "last.png")))
