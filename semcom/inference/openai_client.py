"""OpenAI-compatible chat client over httpx: timeouts, retries, JSON-schema output, images, SSE streaming."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from semcom.errors import BackendDead, BackendFailed, InvalidInput

log = logging.getLogger(__name__)

T = TypeVar("T")
Message = dict[str, Any]

# Overloaded (429) or not ready / draining (503): the same request may succeed a little later.
RETRY_STATUS = frozenset({429, 503})
_MAX_ERROR_CHARS = 500


class OpenAIBackendConfig(Frozen):
    """An OpenAI-compatible HTTP server: vLLM on a GPU, or any /v1/chat/completions endpoint."""

    kind: Literal["openai"] = Field("openai", description="selects this backend in a union of backends")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="API root, including the /v1 part")
    model: str = Field("", description="served model name; empty: the first model the server lists")
    timeout_s: float = Field(60.0, gt=0, description="limit for one attempt of one request, end to end")
    connect_timeout_s: float = Field(5.0, gt=0, description="limit for opening a connection")
    max_concurrency: int = Field(
        8, ge=1, le=1024, description="requests in flight at once; a GPU server batches concurrent requests"
    )
    max_retries: int = Field(3, ge=0, le=10, description="retries after HTTP 429/503 or a refused connection")
    retry_backoff_s: float = Field(0.5, ge=0, description="delay before the first retry; doubles each time")
    max_backoff_s: float = Field(8.0, ge=0, description="cap on one retry delay, also on a Retry-After")
    api_key_env: str | None = Field(
        None, description="environment variable holding the bearer token; None: send no Authorization"
    )


def api_key_from(config: OpenAIBackendConfig, environ: Mapping[str, str]) -> str | None:
    """The bearer token named by `api_key_env` (the daemon passes its environment; no module reads it)."""
    if config.api_key_env is None:
        return None
    key = environ.get(config.api_key_env)
    if not key:
        raise InvalidInput(f"api_key_env: environment variable {config.api_key_env} is not set or empty")
    return key


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as the server decoded it, with its log-probability."""

    token: str
    logprob: float


@dataclass(frozen=True)
class ChatResult:
    """The first choice of a chat completion."""

    text: str
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


def jpeg_data_url(image_bgr: NDArray[np.uint8], *, quality: int = 90) -> str:
    """A BGR uint8 image as a base64 JPEG data URL, the image form every OpenAI-compatible server accepts."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InvalidInput(f"cannot encode an image of shape {image_bgr.shape} as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def image_part(image_bgr: NDArray[np.uint8], *, quality: int = 90) -> dict[str, Any]:
    """A user-message content part carrying one image."""
    return {"type": "image_url", "image_url": {"url": jpeg_data_url(image_bgr, quality=quality)}}


def json_schema_format(name: str, schema: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """`response_format` asking the server to constrain the answer to a JSON schema."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": strict}}


def error_message(response: httpx.Response) -> str:
    """The server's own words from an error body (OpenAI `{"error": {"message"}}`, FastAPI `detail`, text)."""
    text = response.text
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:_MAX_ERROR_CHARS] or response.reason_phrase
    if isinstance(doc, dict):
        err = doc.get("error")
        nested = err.get("message") if isinstance(err, dict) else err
        for found in (nested, doc.get("message"), doc.get("detail")):
            if found:
                return str(found)[:_MAX_ERROR_CHARS]
    return text.strip()[:_MAX_ERROR_CHARS]


async def sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The data of each server-sent event (several `data:` lines joined by newlines), up to `[DONE]`."""
    data: list[str] = []
    try:
        async for line in lines:
            if not line:
                if data:
                    payload, data = "\n".join(data), []
                    if payload == "[DONE]":
                        return
                    yield payload
                continue
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value.removeprefix(" "))
            # Comments (":" keep-alives), "event:", "id:" and "retry:" carry nothing a chat stream needs.
        if data and (payload := "\n".join(data)) != "[DONE]":
            yield payload
    finally:
        # Close the line reader now rather than leave it to the garbage collector (a pending task then).
        close = getattr(lines, "aclose", None)
        if close is not None:
            await close()


def parse_completion(doc: Any) -> ChatResult:
    """A ChatResult from a /chat/completions JSON body; BackendFailed when it has another shape."""
    try:
        choice = doc["choices"][0]
        usage = doc.get("usage") or {}
        content = (choice.get("logprobs") or {}).get("content") or ()
        return ChatResult(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            logprobs=tuple(TokenLogprob(str(t["token"]), float(t["logprob"])) for t in content),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        raise BackendFailed(f"unexpected chat completion shape: {str(doc)[:_MAX_ERROR_CHARS]}") from err


def _stream_delta(payload: str) -> str:
    """The text of one streamed chunk; a chunk carrying an error fails the request."""
    try:
        chunk = json.loads(payload)
    except ValueError as err:
        raise BackendFailed(f"stream chunk is not JSON: {payload[:_MAX_ERROR_CHARS]}") from err
    if not isinstance(chunk, dict):
        raise BackendFailed(f"unexpected stream chunk: {payload[:_MAX_ERROR_CHARS]}")
    if problem := chunk.get("error"):
        detail = problem.get("message") if isinstance(problem, dict) else problem
        raise BackendFailed(f"stream failed: {detail}")
    choices = chunk.get("choices") or []  # empty in a closing usage-only chunk
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    delta = first.get("delta")
    return str(delta.get("content") or "") if isinstance(delta, dict) else ""


class OpenAIClient:
    """Async client of one OpenAI-compatible server, used from one event loop.

    At most `max_concurrency` requests are in flight (more wait their turn), so a batching server stays busy
    without being flooded. A refused connection after all retries raises BackendDead; anything else that
    fails one request (an HTTP error, a timeout, a malformed answer) raises BackendFailed.
    """

    def __init__(
        self,
        config: OpenAIBackendConfig,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        slots = config.max_concurrency
        self._http = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
            transport=transport,
        )
        self._slots = asyncio.Semaphore(slots)
        self._model = config.model
        self.retries = 0

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def models(self) -> list[str]:
        """Ids of the models the server serves."""
        async with self._slots:
            response = await self._send("GET", "models", None, stream=False)
        try:
            return [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as err:
            raise BackendFailed(f"unexpected /models answer: {response.text[:_MAX_ERROR_CHARS]}") from err

    async def model(self) -> str:
        """The configured model, else the server's first (asked once)."""
        if not self._model:
            served = await self.models()
            if not served:
                raise BackendFailed(f"{self.config.base_url} serves no model")
            self._model = served[0]
        return self._model

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        response_format: Mapping[str, Any] | None = None,
        logprobs: bool = False,
        extra_body: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """One chat completion (not streamed)."""
        body = await self._body(messages, max_tokens, temperature, response_format, extra_body)
        if logprobs:
            body["logprobs"] = True
        async with self._slots:
            response = await self._send("POST", "chat/completions", body, stream=False)
        try:
            doc = response.json()
        except ValueError as err:
            raise BackendFailed(f"answer is not JSON: {response.text[:_MAX_ERROR_CHARS]}") from err
        return parse_completion(doc)

    async def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        response_format: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[str, None]:
        """The answer's text pieces as the server streams them (SSE).

        The whole stream must end within `timeout_s` (checked per chunk, on top of httpx's per-read
        limit). Close the iterator (`contextlib.aclosing`) when leaving early: it holds a slot until then.
        """
        body = await self._body(messages, max_tokens, temperature, response_format, extra_body)
        body["stream"] = True
        loop = asyncio.get_running_loop()
        async with self._slots:
            deadline = loop.time() + self.config.timeout_s
            response = await self._send("POST", "chat/completions", body, stream=True)
            try:
                async with aclosing(sse_data(response.aiter_lines())) as events:
                    async for payload in events:
                        if loop.time() > deadline:
                            raise BackendFailed(f"stream did not finish within {self.config.timeout_s} s")
                        if text := _stream_delta(payload):
                            yield text
            except httpx.TimeoutException as err:
                raise BackendFailed(f"stream stalled for {self.config.timeout_s} s") from err
            except httpx.TransportError as err:
                raise BackendFailed(f"stream broke off: {err!r}") from err
            finally:
                await response.aclose()

    async def _body(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        response_format: Mapping[str, Any] | None,
        extra_body: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": await self.model(),
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if response_format is not None:
            body["response_format"] = dict(response_format)
        body.update(extra_body or {})
        return body

    async def _send(self, method: str, path: str, body: Any, *, stream: bool) -> httpx.Response:
        """One request with retries; returns a 2xx response (a stream's body still unread)."""
        cfg = self.config
        delay = cfg.retry_backoff_s
        for attempt in range(cfg.max_retries + 1):
            last = attempt == cfg.max_retries
            try:
                # httpx limits each read; this limits the whole attempt (a slow-dripping answer included).
                async with asyncio.timeout(cfg.timeout_s):
                    request = self._http.build_request(method, path, json=body)
                    response = await self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as err:
                if last:
                    raise BackendDead(f"cannot reach {cfg.base_url}: {err!r}") from err
                wait, why = delay, f"connection failed ({err!r})"
            except (httpx.TimeoutException, TimeoutError) as err:
                raise BackendFailed(f"{path}: no answer within {cfg.timeout_s} s") from err
            except httpx.TransportError as err:
                raise BackendFailed(f"{path}: request failed: {err!r}") from err
            else:
                if response.is_success:
                    return response
                if response.status_code not in RETRY_STATUS or last:
                    await response.aread()
                    await response.aclose()
                    raise BackendFailed(f"{path}: HTTP {response.status_code}: {error_message(response)}")
                wait, why = _retry_after(response, delay), f"HTTP {response.status_code}"
                await response.aclose()
            self.retries += 1
            wait = min(wait, cfg.max_backoff_s)
            log.warning(
                "%s %s: %s; retry %d/%d in %.2f s", method, path, why, attempt + 1, cfg.max_retries, wait
            )
            await asyncio.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")


def _retry_after(response: httpx.Response, default_s: float) -> float:
    """The server's Retry-After in seconds when given as a number, else our own backoff."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return default_s


class LoopThread:
    """An event loop on a daemon thread, through which synchronous callers share one async client."""

    def __init__(self, name: str = "semcom-inference") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for its result (raises what it raises)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop: it would wait for itself forever")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` run on this loop, from another event loop."""
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def close(self) -> None:
        """Stop the loop and its thread; idempotent."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class ThreadedClient:
    """An OpenAIClient on a LoopThread of its own: synchronous callers on any thread and async callers on
    any event loop share its connections. `run`/`arun` take coroutines that use `client`."""

    def __init__(self, server: OpenAIBackendConfig, *, name: str, api_key: str | None = None) -> None:
        self.loop = LoopThread(name)
        self.client = OpenAIClient(server, api_key=api_key)
        self.closed = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self.loop.arun(coro)

    def close(self) -> None:
        """Close the connections and stop the loop thread; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.loop.run(self.client.aclose())
        self.loop.close()
