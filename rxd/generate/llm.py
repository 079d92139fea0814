"""Generating agent on an LLM server (vLLM): expands a record's entries into one descriptive sentence."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from semcom.config import Frozen
from semcom.errors import BackendFailed
from semcom.inference.openai_client import Message, OpenAIBackendConfig, ThreadedClient
from semcom.record import UNKNOWN
from semcom.schema import Schema

SYSTEM_PROMPT = (
    "You write short, factual descriptions for a video search index. "
    "Answer with one sentence and nothing else; do not add details that are not in the entries."
)


class LlmDescriberConfig(Frozen):
    """Options of the LLM generating backend (an OpenAI-compatible server such as vLLM)."""

    kind: Literal["llm"] = Field("llm", description="selects this backend")
    server: OpenAIBackendConfig = Field(default_factory=OpenAIBackendConfig, description="the LLM server")
    max_tokens: int = Field(64, ge=1, le=4096, description="longest description, in tokens")
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy, the same entries give the same text")
    seed: int | None = Field(None, description="sampling seed, for reproducible answers when temperature > 0")
    stream: bool = Field(True, description="receive the answer as a stream of pieces (SSE)")
    system_prompt: str = Field(SYSTEM_PROMPT, description="instructions sent before every request")


def entries_text(schema: Schema, fields: Mapping[str, str]) -> str:
    """Known entries as "label: value" pairs ("gender: male, shirt color: white"); unknown ones left out."""
    values = schema.normalise(fields)
    known = [f"{spec.label}: {values[spec.name]}" for spec in schema.fields if values[spec.name] != UNKNOWN]
    return ", ".join(known) if known else "nothing is known"


def generating_prompt(schema: Schema, fields: Mapping[str, str]) -> str:
    """The paper's generating prompt for one record."""
    entries = entries_text(schema, fields)
    return f"Expand these entries into one sentence describing the {schema.name}: {entries}."


def describe_messages(schema: Schema, fields: Mapping[str, str], system_prompt: str) -> list[Message]:
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": generating_prompt(schema, fields)},
    ]


def clean_description(text: str) -> str:
    """The answer on one line with single spaces; BackendFailed when nothing is left."""
    cleaned = " ".join(text.split())
    if not cleaned:
        raise BackendFailed("the model answered with an empty description")
    return cleaned


class LlmDescriber:
    """Describer backed by an LLM server; requests run concurrently up to the server's `max_concurrency`.

    The client lives on its own event-loop thread, so the synchronous `describe` works from any thread
    (the receiver calls it from its workers) and the async methods from any event loop. A failed request
    raises BackendFailed (the caller falls back to the template); an unreachable server BackendDead.
    """

    def __init__(self, config: LlmDescriberConfig | None = None, *, api_key: str | None = None) -> None:
        self.config = config or LlmDescriberConfig()
        self._remote = ThreadedClient(self.config.server, name="llm-describer", api_key=api_key)

    def describe(self, schema: Schema, fields: Mapping[str, str]) -> str:
        return self._remote.run(self._describe(schema, fields))

    def describe_many(self, schema: Schema, many: Sequence[Mapping[str, str]]) -> list[str]:
        """One description per field mapping, in order, requested concurrently."""
        return self._remote.run(self._describe_many(schema, many))

    async def adescribe(self, schema: Schema, fields: Mapping[str, str]) -> str:
        return await self._remote.arun(self._describe(schema, fields))

    async def adescribe_many(self, schema: Schema, many: Sequence[Mapping[str, str]]) -> list[str]:
        return await self._remote.arun(self._describe_many(schema, many))

    def close(self) -> None:
        """Close the connections and stop the loop thread; idempotent."""
        self._remote.close()

    async def aclose(self) -> None:
        """`close` for the daemon's shutdown on its event loop (joining the loop thread blocks)."""
        await asyncio.to_thread(self._remote.close)

    async def _describe_many(self, schema: Schema, many: Sequence[Mapping[str, str]]) -> list[str]:
        results = await asyncio.gather(*(self._describe(schema, f) for f in many), return_exceptions=True)
        for result in results:
            # Every request has finished by now, so raising the first error leaves nothing running.
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, str)]

    async def _describe(self, schema: Schema, fields: Mapping[str, str]) -> str:
        cfg = self.config
        messages = describe_messages(schema, fields, cfg.system_prompt)
        extra = {"seed": cfg.seed} if cfg.seed is not None else None
        if not cfg.stream:
            result = await self._remote.client.chat(
                messages, max_tokens=cfg.max_tokens, temperature=cfg.temperature, extra_body=extra
            )
            return clean_description(result.text)
        stream = self._remote.client.stream_chat(
            messages, max_tokens=cfg.max_tokens, temperature=cfg.temperature, extra_body=extra
        )
        return clean_description("".join([piece async for piece in stream]))
