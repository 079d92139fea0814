"""The operators' page in a real headless Chromium: search, filters kept in the URL (reload, back), keyframe
thumbnails, a clip that plays in the page, and a record that arrives live."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio

from semcom import client
from semcom.pb.v1 import transmitter_pb2_grpc
from tests.conftest import Chain, start_chain, stop_chain
from tests.fixtures.link import PEOPLE, wait_indexed

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SEMCOM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
# Resolves once the first hit's video element can play (readyState >= 3 is HAVE_FUTURE_DATA: `canplay`).
CAN_PLAY = """() => new Promise((resolve) => {
  const v = document.querySelector('li.hit video');
  if (v.readyState >= 3) resolve(true);
  v.addEventListener('canplay', () => resolve(true), {once: true});
})"""


@pytest_asyncio.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    """The chain with a named camera site: thumbnails and clips come back over its backhaul."""
    c = await start_chain(tmp_path, txd_set=["link.site_id=site-web"])
    yield c
    await stop_chain(c)


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


async def fill_index(chain: Chain, shared_data: Path) -> tuple[transmitter_pb2_grpc.TransmitterStub, int]:
    """An analysed video (records with keyframes) and the three PEOPLE announced (none); the number of
    records the analysis sent."""
    stub = transmitter_pb2_grpc.TransmitterStub(client.open_channel(chain.txd_address))
    video = shared_data / "videos" / "tud_campus.mp4"
    started = time.time()
    reply = await asyncio.to_thread(client.ingest_file, stub, video, stream_id="cam-web", location_id=4)
    assert reply.records_sent >= 1
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
    await wait_indexed(chain.rxd_address, reply.records_sent + 3)
    return stub, reply.records_sent


@pytest.mark.asyncio
async def test_operators_page(chain: Chain, shared_data: Path, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: run ./scripts/setup.sh --test (installs Debian's chromium)")
    stub, analysed = await fill_index(chain, shared_data)
    assert chain.rxd.http is not None
    url = f"http://127.0.0.1:{chain.rxd.http.port}/"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        await page.goto(url)
        await page.wait_for_selector("body[data-ready='1']")
        await search_and_read(page)
        await thumbnails(page, analysed)
        await play_clip(page)
        await filters_in_the_url(page, url)
        await live_record(page, stub)
        await page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        # A slot may list several values: its chip shows them all; an empty query is a clear error.
        await page.fill("#q", "woman in a red or white top")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#slots span:has-text('upper_color: red or white')")
        # "unknown" is a slot value too: people whose shoes the transmitter could not read.
        await page.fill("#q", "")
        assert await page.inner_text("#slot-shoe_color option[value=unknown]") == "unknown (not seen)"
        await page.select_option("#slot-shoe_color", "unknown")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#slots span:has-text('shoe_color: unknown')")
        assert query_of(page.url)["shoe_color"] == ["unknown"]
        await page.select_option("#slot-shoe_color", "")
        await page.fill("#q", "")
        await page.click("#clear")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#status.error")
        assert "empty query" in (await page.inner_text("#status"))
        await browser.close()
    assert blocked == [], blocked  # the page runs under its CSP without a single violation
    assert all(u.startswith(url) or u.startswith("blob:") for u in requested), requested  # nothing foreign
    shutil.copy(tmp_path / "page.png", Path(os.environ.get("SEMCOM_SCREENSHOT", tmp_path / "last.png")))


async def search_and_read(page: Any) -> None:
    await page.fill("#q", "woman with a red shirt")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("li.hit")
    first = page.locator("li.hit").first
    assert "red" in (await first.locator(".desc").inner_text())
    assert "matched gender, upper_color" in (await first.locator(".meta").inner_text())
    assert "p 100 %" in (await first.locator(".meta").inner_text())
    why = await first.locator(".confidence").inner_text()
    assert "upper_color: sent red → 100 %" in why, why
    assert "hits" in (await page.inner_text("#status"))
    assert "upper_color: red" in (await page.inner_text("#slots"))
    last = page.locator("li.hit").last
    assert "differs: gender" in (await last.locator(".meta").inner_text())
    assert query_of(page.url) == {"q": ["woman with a red shirt"]}
    # Keyboard: arrow keys move between hits.
    await first.focus()
    await page.keyboard.press("ArrowDown")
    assert await page.evaluate("document.activeElement === document.querySelectorAll('li.hit')[1]")
    # The least probability is a filter kept in the URL like the others: contradicted hits go.
    every = await page.locator("li.hit").count()
    await page.select_option("#f-minp", "0.9")
    await page.click("button[type=submit]")
    await page.wait_for_function(f"() => document.querySelectorAll('li.hit').length < {every}")
    assert query_of(page.url)["minp"] == ["0.9"]
    assert all("p 100 %" in m for m in await page.locator("li.hit .meta").all_inner_texts())
    await page.select_option("#f-minp", "")
    await page.click("button[type=submit]")
    await page.wait_for_function(f"() => document.querySelectorAll('li.hit').length === {every}")


async def thumbnails(page: Any, analysed: int) -> None:
    """Records from the analysis have a keyframe at txd; announced ones say they have none."""
    own = page.locator("li.hit[data-stream-id='cam-web'][data-record-id='1']")
    await own.locator("button.show-thumb").click()
    img = own.locator(".thumb img")
    await img.wait_for()
    assert await img.evaluate("(i) => i.decode().then(() => i.naturalWidth > 0 && i.naturalHeight > 0)")
    announced = page.locator(f"li.hit[data-record-id='{analysed + 1}']")
    await announced.locator("button.show-thumb").click()
    await announced.locator(".thumb:has-text('no keyframe')").wait_for()
    await page.wait_for_function(
        "() => /[1-9]\\d* thumbnail bytes/.test(document.getElementById('stats').textContent)"
    )
    # With the setting on, the top hits' thumbnails load by themselves (the setting survives a reload).
    await page.check("#auto-thumbs")
    await page.click("button[type=submit]")
    await page.wait_for_selector("li.hit .thumb img, li.hit .thumb .nothumb")


async def play_clip(page: Any) -> None:
    first = page.locator("li.hit").first
    await first.locator("button.fetch").click()
    await first.locator("video").wait_for()
    assert await page.wait_for_function(CAN_PLAY, timeout=30000)
    assert "KiB over the backward channel" in (await first.locator("button.fetch").inner_text())
    assert await first.locator(".timeline .marker").count() == 1
    assert (await first.locator("a.download").get_attribute("download") or "").endswith(".mp4")
    await page.wait_for_function("() => !/ 0 clip bytes/.test(document.getElementById('stats').textContent)")


async def filters_in_the_url(page: Any, url: str) -> None:
    await page.fill("#q", "someone")
    await page.select_option("#slot-upper_color", "white")
    await page.select_option("#f-site", "site-web")
    await page.select_option("#f-stream", "cam-web")
    await page.select_option("#f-time", "24h")
    await page.click("button[type=submit]")
    await page.wait_for_function("() => /white/.test(document.getElementById('slots').textContent)")
    wanted = {"q": ["someone"], "upper_color": ["white"], "site": ["site-web"], "stream": ["cam-web"]}
    wanted["time"] = ["24h"]
    assert query_of(page.url) == wanted
    assert "white" in (await page.locator("li.hit .desc").first.inner_text())
    # A reload (or the link shared) reproduces the search, filters included.
    await page.reload()
    await page.wait_for_selector("body[data-ready='1']")
    await page.wait_for_selector("li.hit")
    assert await page.input_value("#slot-upper_color") == "white"
    assert await page.input_value("#f-stream") == "cam-web" and await page.input_value("#q") == "someone"
    assert await page.input_value("#f-site") == "site-web"
    # A custom window (from, to) that holds nothing: no hits, and the URL carries both ends.
    await page.select_option("#f-time", "custom")
    await page.fill("#f-from", "2001-01-01T00:00:00")
    await page.fill("#f-to", "2001-01-02T00:00:00")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#status:has-text('0 hits')")
    window = query_of(page.url)
    assert (window["time"], window["from"], window["to"]) == (
        ["custom"],
        ["2001-01-01T00:00"],  # the input's value: seconds of 0 are left out
        ["2001-01-02T00:00"],
    )
    await page.go_back()  # to the filtered search before it
    await page.wait_for_function("() => document.getElementById('f-time').value === '24h'")
    await page.wait_for_selector("li.hit")
    # Back returns to the earlier search and runs it again.
    await page.go_back()
    await page.wait_for_function("() => document.getElementById('q').value === 'woman with a red shirt'")
    await page.wait_for_function(
        "() => /upper_color: red/.test(document.getElementById('slots').textContent)"
    )
    assert await page.input_value("#slot-upper_color") == ""


async def live_record(page: Any, stub: transmitter_pb2_grpc.TransmitterStub) -> None:
    await page.wait_for_selector("#live-state:has-text('live')")
    await page.wait_for_selector("#sites .site[data-site-id='site-web']:has-text('link up')")
    assert "MCS qpsk/ldpc_r12" in (await page.inner_text("#sites"))
    fields = {"gender": "male", "upper_color": "yellow", "lower_color": "green"}
    await asyncio.to_thread(client.announce, stub, stream_id="cam-live", fields=fields, location_id=6)
    arrived = page.locator("#arrivals li:has-text('yellow')")
    await arrived.wait_for(timeout=30000)
    assert "cam-live #1" in (await arrived.inner_text())
    # The new camera and location are offered as filters.
    await page.wait_for_selector("#f-stream option[value='cam-live']", state="attached")
    meter = await page.inner_text("#meter")
    assert "video itself" in meter and "clips: " in meter and "thumbnails: " in meter
