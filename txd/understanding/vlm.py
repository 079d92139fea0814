"""Understanding with a VLM server (vLLM): one JSON answer per crop, held to the schema's vocabularies."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from semcom.config import Frozen
from semcom.errors import BackendDead, SemcomError
from semcom.inference.openai_client import (
    ChatResult,
    OpenAIBackendConfig,
    OpenAIClient,
    TokenLogprob,
    image_part,
    json_schema_format,
)
from semcom.record import UNKNOWN
from semcom.schema import Schema
from txd.understanding.base import Mask, Understanding, check_crop
from txd.understanding.fusion import vote

log = logging.getLogger(__name__)


class VlmConfig(Frozen):
    """Options of the VLM understanding backend (an OpenAI-compatible server such as vLLM)."""

    kind: Literal["vlm"] = Field("vlm", description="selects this backend")
    server: OpenAIBackendConfig = Field(default_factory=OpenAIBackendConfig, description="the VLM server")
    max_side_px: int = Field(
        448, ge=16, le=4096, description="crops are shrunk, never enlarged, to at most this longer side"
    )
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of the crops sent")
    max_tokens: int = Field(200, ge=16, le=4096, description="room for the JSON answer")
    logprobs: bool = Field(
        True, description="confidence from the answer's token log-probabilities; False: 1.0 per answer"
    )


def understanding_prompt(schema: Schema) -> str:
    """The paper's understanding prompt, with the attributes and allowed answers taken from the schema."""
    keys = schema.answer_keys
    allowed = "\n".join(f"- {keys[f.name]}: {', '.join(f.values)}" for f in schema.fields)
    return (
        f"Describe the {schema.name} in the image: {', '.join(keys.values())}. "
        f"Answer '{UNKNOWN}' when the image does not show it. "
        f"Reply with a JSON object that gives one of these values for each key:\n{allowed}"
    )


def answer_schema(schema: Schema) -> dict[str, Any]:
    """JSON schema of the answer: every key required, each an enum of its vocabulary ("unknown" included)."""
    keys = schema.answer_keys
    return {
        "type": "object",
        "properties": {keys[f.name]: {"type": "string", "enum": list(f.values)} for f in schema.fields},
        "required": [keys[f.name] for f in schema.fields],
        "additionalProperties": False,
    }


def value_confidence(text: str, tokens: Sequence[TokenLogprob], key: str) -> float | None:
    """exp(sum of log-probabilities) of the tokens spelling `key`'s value in `text`; None if not aligned.

    Servers differ in what the log-probabilities are taken from: vLLM's CPU build reports them after the
    structured-output mask (a forced token has log-probability 0), so this is the probability of the value
    among the allowed ones; from unmasked logits it would also drop when the model wanted another word.
    """
    # The tokens may run on past the text with the end-of-sequence token the server strips.
    if not tokens or not "".join(t.token for t in tokens).startswith(text):
        return None
    match = re.search(re.escape(json.dumps(key)) + r'\s*:\s*"([^"]*)"', text)
    if match is None:
        return None
    start, end = match.span(1)
    total, pos = 0.0, 0
    for tok in tokens:
        nxt = pos + len(tok.token)
        if nxt > start and pos < end:
            total += tok.logprob
        pos = nxt
    return math.exp(total)


def shrink(crop: NDArray[np.uint8], max_side_px: int) -> NDArray[np.uint8]:
    """The crop with its longer side at most `max_side_px` (area averaging, aspect kept)."""
    h, w = crop.shape[:2]
    if max(h, w) <= max_side_px:
        return crop
    import cv2

    scale = max_side_px / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


class VlmUnderstander:
    """Understander that asks a VLM server about each crop, all crops in parallel up to `max_concurrency`.

    The answer format is enforced by the server (structured outputs), so a valid answer always maps to the
    schema. A request that fails, or an answer that does not parse, gives all-unknown with confidence 0 and
    counts in `failures`; a value outside the vocabulary (a server without structured outputs) gives
    unknown for that field and counts in `invalid_values`. An unreachable server raises BackendDead.
    """

    def __init__(self, config: VlmConfig | None = None, *, client: OpenAIClient | None = None) -> None:
        self.config = config or VlmConfig()
        self._own_client = client is None
        self._client = client or OpenAIClient(self.config.server)
        self.requests = 0
        self.failures = 0
        self.invalid_values = 0

    async def __aenter__(self) -> VlmUnderstander:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def fuse(self, views: Sequence[Understanding], schema: Schema) -> Understanding:
        """A VLM answers values and confidences, no distributions: the crops of a track are voted."""
        return vote(views, schema)

    async def aclose(self) -> None:
        """Close the client's connections, unless the client was passed in (its owner closes it)."""
        if self._own_client:
            await self._client.aclose()

    async def understand(
        self, crops: Sequence[NDArray[np.uint8]], schema: Schema, masks: Sequence[Mask | None] | None = None
    ) -> list[Understanding]:
        """One Understanding per BGR uint8 crop, in order; the model sees whole crops (`masks` unused)."""
        for i, crop in enumerate(crops):
            check_crop(crop, i)
        prompt = understanding_prompt(schema)
        fmt = json_schema_format(f"{schema.name}_attributes", answer_schema(schema))
        # Shrinking and JPEG-encoding takes up to several ms per crop: keep it off the event loop.
        images = await asyncio.to_thread(self._encode, crops)
        results = await asyncio.gather(*(self._ask(i, prompt, fmt) for i in images), return_exceptions=True)
        out: list[Understanding] = []
        for i, result in enumerate(results):
            if isinstance(result, SemcomError) and not isinstance(result, BackendDead):
                log.warning("understanding crop %d of %d failed: %s", i, len(crops), result)
                self.failures += 1
                out.append(_all_unknown(schema))
            elif isinstance(result, BaseException):
                raise result  # a dead server (the daemon drains) or a bug: not a per-crop failure
            else:
                out.append(self._read(result, schema))
        return out

    def _encode(self, crops: Sequence[NDArray[np.uint8]]) -> list[dict[str, Any]]:
        cfg = self.config
        return [image_part(shrink(c, cfg.max_side_px), quality=cfg.jpeg_quality) for c in crops]

    async def _ask(self, image: dict[str, Any], prompt: str, fmt: Mapping[str, Any]) -> ChatResult:
        cfg = self.config
        messages = [{"role": "user", "content": [image, {"type": "text", "text": prompt}]}]
        self.requests += 1
        return await self._client.chat(
            messages, max_tokens=cfg.max_tokens, temperature=0.0, response_format=fmt, logprobs=cfg.logprobs
        )

    def _read(self, result: ChatResult, schema: Schema) -> Understanding:
        """Field values and confidences from one answer; all-unknown (a counted failure) if it is not JSON."""
        try:
            answer = json.loads(result.text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            log.warning("VLM answer is not a JSON object (%s): %.200r", result.finish_reason, result.text)
            self.failures += 1
            return _all_unknown(schema)
        fields: dict[str, str] = {}
        confidence: dict[str, float] = {}
        keys = schema.answer_keys
        for spec in schema.fields:
            key = keys[spec.name]
            raw = answer.get(key)
            value = raw.strip().lower() if isinstance(raw, str) else ""
            if value not in spec.values:
                self.invalid_values += 1
                fields[spec.name], confidence[spec.name] = UNKNOWN, 0.0
                continue
            found = value_confidence(result.text, result.logprobs, key) if self.config.logprobs else None
            fields[spec.name] = value
            # A VLM reports no confidence of its own: without aligned logprobs an answer counts as certain.
            confidence[spec.name] = round(found if found is not None else 1.0, 4)
        return Understanding(fields=fields, confidence=confidence)


def _all_unknown(schema: Schema) -> Understanding:
    return Understanding(
        fields=dict.fromkeys(schema.field_names, UNKNOWN), confidence=dict.fromkeys(schema.field_names, 0.0)
    )
