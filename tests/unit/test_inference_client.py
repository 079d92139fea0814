"""OpenAI-compatible client, VLM understander and LLM describer against a scripted HTTP server on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest
import pytest_asyncio
from numpy.typing import NDArray

from rxd.generate.llm import LlmDescriber, LlmDescriberConfig
from semcom.errors import BackendDead, BackendFailed
from semcom.inference.openai_client import (
    OpenAIBackendConfig,
    OpenAIClient,
    image_part,
    json_schema_format,
    sse_data,
)
from semcom.schema import Schema, SchemaRegistry
from txd.understanding.vlm import VlmConfig, VlmUnderstander, answer_schema


@dataclass
class Reply:
    """What the fake server sends: a JSON body, or SSE chunks written one by one."""

    status: int = 200
    body: Any = None
    chunks: list[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeServer:
    """A minimal HTTP/1.1 server: each request is recorded and answered by `handler`."""

    def __init__(self, handler: Callable[[Seen], Reply]) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while seen := await self._read(reader):
                self.seen.append(seen)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await self._answer(writer, self.handler(seen))
                finally:
                    self.in_flight -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Seen | None:
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            return None
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        return Seen(method, path, headers, json.loads(raw) if raw else None)

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, reply: Reply) -> None:
        await asyncio.sleep(reply.delay_s)
        if reply.chunks is None:
            payload = json.dumps(reply.body).encode()
            head = {"content-type": "application/json", "content-length": str(len(payload)), **reply.headers}
        else:
            payload = b""
            head = {"content-type": "text/event-stream", "transfer-encoding": "chunked", **reply.headers}
        lines = [f"HTTP/1.1 {reply.status} X", *(f"{k}: {v}" for k, v in head.items()), "", ""]
        writer.write("\r\n".join(lines).encode() + payload)
        for chunk in reply.chunks or ():
            data = chunk.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        if reply.chunks is not None:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


def decode_data_url(url: str) -> NDArray[np.uint8]:
    assert url.startswith("data:image/jpeg;base64,")
    image = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image, dtype=np.uint8)


def completion(text: str, logprobs: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": t, "logprob": lp} for t, lp in logprobs]}
    return {"choices": [choice], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}


def sse(*pieces: str) -> list[str]:
    events = [f"data: {json.dumps({'choices': [{'delta': {'content': p}}]})}\n\n" for p in pieces]
    return [": keep-alive\n\n", *events, "data: [DONE]\n\n"]


def config(base_url: str, **over: Any) -> OpenAIBackendConfig:
    opts: dict[str, Any] = {"base_url": base_url, "model": "m", "timeout_s": 5.0, "retry_backoff_s": 0.0}
    return OpenAIBackendConfig(**{**opts, **over})


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer(lambda seen: Reply(body=completion("hello")))
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def person() -> Schema:
    return SchemaRegistry.builtin().get("person/1")


@pytest.mark.asyncio
async def test_chat_request_body_and_result(fake: FakeServer) -> None:
    fake.handler = lambda seen: Reply(body=completion("hi", [("h", -0.1), ("i", -0.2)]))
    fmt = json_schema_format("answer", {"type": "object"})
    async with OpenAIClient(config(await fake.start()), api_key="secret") as client:
        result = await client.chat(
            [{"role": "user", "content": "x"}], max_tokens=7, response_format=fmt, logprobs=True
        )
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        "hi",
        "stop",
        11,
        3,
    )
    assert [t.token for t in result.logprobs] == ["h", "i"]
    seen = fake.seen[0]
    assert (seen.method, seen.path, seen.headers["authorization"]) == (
        "POST",
        "/v1/chat/completions",
        "Bearer secret",
    )
    assert seen.body == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 7,
        "temperature": 0.0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
        "logprobs": True,
    }


@pytest.mark.asyncio
async def test_model_defaults_to_the_first_served(fake: FakeServer) -> None:
    fake.handler = lambda seen: Reply(
        body={"data": [{"id": "served"}]} if seen.method == "GET" else completion("a")
    )
    async with OpenAIClient(config(await fake.start(), model="")) as client:
        await client.chat([{"role": "user", "content": "x"}])
        await client.chat([{"role": "user", "content": "y"}])
    assert [s.path for s in fake.seen] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
    assert fake.seen[1].body["model"] == "served"


@pytest.mark.asyncio
async def test_retries_429_and_503_then_succeeds(fake: FakeServer) -> None:
    statuses = iter([429, 503, 200])

    def handler(seen: Seen) -> Reply:
        status = next(statuses)
        return Reply(
            status=status, body=completion("ok") if status == 200 else {}, headers={"retry-after": "0"}
        )

    fake.handler = handler
    async with OpenAIClient(config(await fake.start())) as client:
        result = await client.chat([{"role": "user", "content": "x"}])
        assert (result.text, client.retries, len(fake.seen)) == ("ok", 2, 3)


@pytest.mark.asyncio
async def test_gives_up_after_max_retries_with_the_servers_message(fake: FakeServer) -> None:
    fake.handler = lambda seen: Reply(status=503, body={"error": {"message": "engine is busy"}})
    async with OpenAIClient(config(await fake.start(), max_retries=2)) as client:
        with pytest.raises(BackendFailed, match="HTTP 503: engine is busy"):
            await client.chat([{"role": "user", "content": "x"}])
    assert len(fake.seen) == 3


@pytest.mark.asyncio
async def test_client_error_is_not_retried(fake: FakeServer) -> None:
    fake.handler = lambda seen: Reply(
        status=400, body={"message": "max_tokens is too large", "type": "BadRequest"}
    )
    async with OpenAIClient(config(await fake.start())) as client:
        with pytest.raises(BackendFailed, match="HTTP 400: max_tokens is too large"):
            await client.chat([{"role": "user", "content": "x"}])
    assert len(fake.seen) == 1


@pytest.mark.asyncio
async def test_slow_answer_times_out_as_a_failed_request(fake: FakeServer) -> None:
    fake.handler = lambda seen: Reply(body=completion("late"), delay_s=2.0)
    async with OpenAIClient(config(await fake.start(), timeout_s=0.2)) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(BackendFailed, match=r"no answer within 0\.2 s"):
            await client.chat([{"role": "user", "content": "x"}])
        assert loop.time() - t0 < 1.5


@pytest.mark.asyncio
async def test_unreachable_server_is_dead() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with OpenAIClient(config(f"http://127.0.0.1:{port}/v1", max_retries=1)) as client:
        with pytest.raises(BackendDead, match="cannot reach"):
            await client.chat([{"role": "user", "content": "x"}])
        assert client.retries == 1


@pytest.mark.asyncio
async def test_concurrency_is_bounded(fake: FakeServer) -> None:
    fake.handler = lambda seen: Reply(body=completion("x"), delay_s=0.05)
    async with OpenAIClient(config(await fake.start(), max_concurrency=2)) as client:
        results = await asyncio.gather(
            *(client.chat([{"role": "user", "content": str(i)}]) for i in range(6))
        )
    assert len(results) == 6
    assert fake.max_in_flight == 2


@pytest.mark.asyncio
async def test_stream_yields_the_pieces(fake: FakeServer) -> None:
    fake.handler = lambda seen: Reply(chunks=sse("A man", " in", " a white shirt."))
    async with OpenAIClient(config(await fake.start())) as client:
        pieces = [p async for p in client.stream_chat([{"role": "user", "content": "x"}], max_tokens=5)]
    assert pieces == ["A man", " in", " a white shirt."]
    assert fake.seen[0].body["stream"] is True


@pytest.mark.asyncio
async def test_stream_error_chunk_fails_the_request(fake: FakeServer) -> None:
    bad = 'data: {"error": {"message": "out of memory"}}\n\n'
    fake.handler = lambda seen: Reply(chunks=[sse("a")[1], bad])
    async with OpenAIClient(config(await fake.start())) as client:
        stream = client.stream_chat([{"role": "user", "content": "x"}])
        with pytest.raises(BackendFailed, match="out of memory"):
            async with aclosing(stream):
                async for _ in stream:
                    pass


@pytest.mark.asyncio
async def test_sse_parser_joins_data_lines_and_stops_at_done() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [
            "event: x",
            "data: one",
            "data: two",
            "",
            ": comment",
            "",
            "data:three",
            "",
            "data: [DONE]",
            "",
        ]:
            yield line
        yield "data: after done"

    assert [d async for d in sse_data(lines())] == ["one\ntwo", "three"]


def test_image_part_is_a_jpeg_data_url() -> None:
    image = np.zeros((40, 20, 3), np.uint8)
    assert decode_data_url(image_part(image)["image_url"]["url"]).shape == (40, 20, 3)


@pytest.mark.asyncio
async def test_vlm_understander_reads_valid_answers_and_survives_bad_ones(
    fake: FakeServer, person: Schema
) -> None:
    good = json.dumps(
        {
            "gender": "female",
            "shirt color": "red",
            "sleeve length": "unknown",
            "pants color": "blue",
            "pants length": "long",
            "shoes color": "black",
        },
        separators=(",", ":"),
    )
    tokens = [(good[:11], -0.1), (good[11:17], -0.2), (good[17:], -0.3)]  # the 2nd token is "female"
    answers = iter(
        [completion(good, tokens), completion("not json"), completion(good.replace('"red"', '"navy"'))]
    )
    fake.handler = lambda seen: Reply(body=next(answers))
    cfg = VlmConfig(server=config(await fake.start(), max_concurrency=1), max_side_px=64)
    vlm = VlmUnderstander(cfg)
    crops = [np.full((128, 48, 3), i * 60, np.uint8) for i in range(3)]
    out = await vlm.understand(crops, person)
    await vlm.aclose()
    assert out[0].fields == {
        "gender": "female",
        "upper_color": "red",
        "sleeve": "unknown",
        "lower_color": "blue",
        "lower_length": "long",
        "shoe_color": "black",
    }
    assert out[0].confidence["gender"] == pytest.approx(np.exp(-0.2), abs=1e-4)
    assert out[0].confidence["shoe_color"] == pytest.approx(np.exp(-0.3), abs=1e-4)
    assert set(out[1].fields.values()) == {"unknown"} and set(out[1].confidence.values()) == {0.0}
    assert out[2].fields["upper_color"] == "unknown" and out[2].fields["lower_color"] == "blue"
    assert out[2].confidence["lower_color"] == 1.0  # no logprobs in that answer: a VLM states no confidence
    assert (vlm.requests, vlm.failures, vlm.invalid_values) == (3, 1, 1)
    body = fake.seen[0].body
    assert body["response_format"]["json_schema"]["schema"] == answer_schema(person)
    assert answer_schema(person)["properties"]["shirt color"]["enum"][0] == "unknown"
    content = body["messages"][0]["content"]
    assert content[0]["type"] == "image_url" and "shirt color" in content[1]["text"]
    assert decode_data_url(content[0]["image_url"]["url"]).shape == (64, 24, 3)  # shrunk to max_side_px


@pytest.mark.asyncio
async def test_llm_describer_prompt_stream_and_batch(fake: FakeServer, person: Schema) -> None:
    fake.handler = lambda seen: Reply(chunks=sse(" A woman ", "in red.\n"))
    cfg = LlmDescriberConfig(server=config(await fake.start()))
    describer = LlmDescriber(cfg)
    try:
        fields = {"gender": "female", "upper_color": "red"}
        text = await asyncio.to_thread(describer.describe, person, fields)
        many = await describer.adescribe_many(person, [fields, {}, {"shoe_color": "white"}])
    finally:
        describer.close()
    assert text == "A woman in red."
    assert many == [text] * 3
    prompt = fake.seen[0].body["messages"][-1]["content"]
    assert (
        prompt
        == "Expand these entries into one sentence describing the person: gender: female, shirt color: red."
    )


@pytest.mark.asyncio
async def test_llm_describer_empty_answer_is_a_failure(fake: FakeServer, person: Schema) -> None:
    fake.handler = lambda seen: Reply(body=completion("  \n"))
    describer = LlmDescriber(LlmDescriberConfig(server=config(await fake.start()), stream=False))
    try:
        with pytest.raises(BackendFailed, match="empty"):
            await asyncio.to_thread(describer.describe, person, {"gender": "male"})
    finally:
        describer.close()
