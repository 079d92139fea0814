"""Query parsing on an LLM server (vLLM): free text to schema slots as JSON held to the vocabularies."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal

from prometheus_client import Counter
from pydantic import Field, field_validator

from semcom.config import Frozen
from semcom.errors import BackendDead, BackendFailed
from semcom.inference.openai_client import (
    Message,
    OpenAIBackendConfig,
    ThreadedClient,
    json_schema_format,
)
from semcom.record import UNKNOWN
from semcom.schema import Schema

from .parse import ParsedQuery, SlotSets, attribute_help, parse_query

log = logging.getLogger(__name__)

# How each query the LLM parser saw was answered; the last three are fallbacks to the embedded parser.
OUTCOMES = ("answers", "cache_hits", "invalid_answers", "failed", "server_down")
FALLBACKS = OUTCOMES[2:]
PARSES = Counter(
    "semcom_rxd_query_parses_total", "Queries given to the LLM query parser, by outcome", ["outcome"]
)

SYSTEM_PROMPT = (
    "You read search queries for a video archive and say which attributes they ask for. "
    "Map each word of the query to the listed values (trousers and jeans are pants, a jumper is a shirt, "
    "a colour is its nearest listed colours: navy is blue, teal is blue and green). "
    "Answer with the JSON object only."
)


# A user waits on every query: give up early and fall back rather than retry at length.
QUERY_SERVER_DEFAULTS: Mapping[str, Any] = {"timeout_s": 10.0, "max_retries": 1}


class LlmParserConfig(Frozen):
    """Options of the LLM query parser (an OpenAI-compatible server such as vLLM)."""

    kind: Literal["llm"] = Field("llm", description="selects this parser")
    server: OpenAIBackendConfig = Field(
        default_factory=lambda: OpenAIBackendConfig.model_validate(QUERY_SERVER_DEFAULTS),
        description="the LLM server: base_url, model, timeout_s, max_concurrency (requests in flight), "
        "max_retries; unless set, timeout_s is 10 and max_retries 1 (a user waits on each query)",
    )
    max_tokens: int = Field(
        384,
        ge=16,
        le=4096,
        description="room for the JSON answer: about 8 tokens per schema field and 3 per value listed "
        "(~60 for a typical person/1 query; every value of every field fits in 384)",
    )
    system_prompt: str = Field(SYSTEM_PROMPT, description="instructions sent before every request")
    down_cooldown_s: float = Field(
        30.0,
        ge=0,
        description="after the server was unreachable, queries use the embedded parser for this long "
        "before the server is tried again (so a dead server costs no time per query)",
    )
    cache_size: int = Field(
        1024, ge=0, description="answers kept per distinct query text (repeated queries ask once); 0: none"
    )

    @field_validator("server", mode="before")
    @classmethod
    def _interactive_defaults(cls, value: Any) -> Any:
        """Keys left out of a given `server` section take the query defaults, not the batch client's."""
        return {**QUERY_SERVER_DEFAULTS, **value} if isinstance(value, Mapping) else value


def parsing_prompt(schema: Schema, text: str) -> str:
    """The instruction, with attributes and allowed values from the schema, then the query text.

    The query comes last so that the instruction is a prefix shared by every request (prefix caching).
    """
    keys = schema.answer_keys
    allowed = "\n".join(
        f"- {keys[f.name]}: {', '.join(f.values[1:])}" + (f" ({f.description})" if f.description else "")
        for f in schema.fields
    )
    return (
        f"Which attributes of the {schema.name} does this search query ask for: {', '.join(keys.values())}? "
        "Give an empty list for an attribute the query does not mention; do not guess. "
        "Reply with a JSON object that gives, for each key, the list of these values the query accepts "
        f"(several when it allows several, as in 'red or blue'):\n{allowed}\n"
        f"Query: {text}"
    )


def parsing_messages(schema: Schema, text: str, system_prompt: str) -> list[Message]:
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": parsing_prompt(schema, text)},
    ]


def answer_schema(schema: Schema) -> dict[str, Any]:
    """JSON schema of the answer: every key required, each a list of values of its vocabulary (the slot set;
    empty: not asked for). "unknown" is left out: a query asks for what it wants.
    """
    keys = schema.answer_keys
    return {
        "type": "object",
        "properties": {
            keys[f.name]: {
                "type": "array",
                "items": {"enum": list(f.values[1:])},
                "maxItems": len(f.values) - 1,
            }
            for f in schema.fields
        },
        "required": [keys[f.name] for f in schema.fields],
        "additionalProperties": False,
    }


class InvalidAnswer(BackendFailed):
    """The server answered, but not with a JSON object of the schema's keys and values."""


def read_answer(text: str, schema: Schema) -> SlotSets:
    """Slot sets (schema order) from an answer; an empty list, null, "unknown" and a missing key mean not
    asked for; a single value (the older answer form) is a set of one.

    InvalidAnswer for anything else: text that is not a JSON object, a key the schema does not have, a value
    outside a field's vocabulary. A server without structured outputs can answer so; the whole answer is
    then dropped, since one wrong value says the rest cannot be trusted either.
    """
    try:
        answer = json.loads(text)
    except ValueError as err:
        raise InvalidAnswer(f"answer is not JSON: {text[:200]!r}") from err
    if not isinstance(answer, dict):
        raise InvalidAnswer(f"answer is not a JSON object: {text[:200]!r}")
    keys = schema.answer_keys
    extra = sorted(set(answer) - set(keys.values()))
    if extra:
        raise InvalidAnswer(f"answer has keys the schema does not: {', '.join(map(repr, extra))}")
    slots: SlotSets = {}
    for spec in schema.fields:
        raw = answer.get(keys[spec.name])
        given = raw if isinstance(raw, list) else [] if raw is None else [raw]
        values = [v.strip().lower() if isinstance(v, str) else v for v in given]
        for value in values:
            if not isinstance(value, str) or (value not in spec.values):
                raise InvalidAnswer(
                    f"{keys[spec.name]!r}: {raw!r} is not a list of {', '.join(spec.values[1:])}"
                )
        chosen = {v for v in values if v != UNKNOWN}
        if chosen:
            slots[spec.name] = tuple(v for v in spec.values if v in chosen)
    return slots


def llm_parsed(slots: SlotSets, embedded: ParsedQuery, schema: Schema) -> ParsedQuery:
    """The model's slots with the embedded parse's word-level findings, in ParsedQuery's shape.

    Words the embedded lexicon does not know stay listed (the model may have read them; the index cannot
    hold them). Its notes on binding (a colour tied to no garment, two colours for one) are dropped: the
    model did the binding. A query naming no attribute gets the note and help the embedded parser gives.
    """
    notes: list[str] = []
    if not slots:
        notes.append("no attribute understood")
    if embedded.unmatched:
        notes.append(f"not understood: {', '.join(embedded.unmatched)}")
    if not slots:
        notes.append(f"ask about {attribute_help(schema)}")
    ordered = {name: slots[name] for name in schema.field_names if name in slots}
    return ParsedQuery(ordered, list(embedded.unmatched), "; ".join(notes), source="llm")


class LlmQueryParser:
    """QueryParser that asks an LLM server and falls back to the embedded parser on any failure.

    The server holds the answer to `answer_schema` (structured outputs), so a valid answer always maps to the
    vocabularies. A failed request, a timeout, an invalid answer or an unreachable server gives the embedded
    parse instead and counts in `stats()`; after an unreachable server, queries skip it for
    `down_cooldown_s`. The client lives on its own event-loop thread, so `parse` works from any thread.
    """

    def __init__(self, config: LlmParserConfig | None = None, *, api_key: str | None = None) -> None:
        self.config = config or LlmParserConfig()
        self._remote = ThreadedClient(self.config.server, name="llm-query-parser", api_key=api_key)
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], SlotSets] = OrderedDict()
        self._down_until = 0.0
        self._counts = dict.fromkeys(("requests", *OUTCOMES), 0)

    def parse(self, text: str, schema: Schema) -> ParsedQuery:
        embedded = parse_query(text, schema)
        if (early := self._without_request(text, schema, embedded)) is not None:
            return early
        try:
            slots = self._remote.run(self._ask(text, schema))
        except (BackendFailed, BackendDead) as err:
            return self._fallback(err, embedded)
        return self._accept(text, schema, slots, embedded)

    async def aparse(self, text: str, schema: Schema) -> ParsedQuery:
        """`parse` for callers on an event loop: the request runs without holding a worker thread."""
        embedded = parse_query(text, schema)
        if (early := self._without_request(text, schema, embedded)) is not None:
            return early
        try:
            slots = await self._remote.arun(self._ask(text, schema))
        except (BackendFailed, BackendDead) as err:
            return self._fallback(err, embedded)
        return self._accept(text, schema, slots, embedded)

    def stats(self) -> dict[str, int]:
        """Counters: LLM requests and valid answers, cache hits, fallbacks to the embedded parser by cause."""
        with self._lock:
            counts = {**self._counts, "fallbacks": sum(self._counts[name] for name in FALLBACKS)}
        return {f"parse_{name}": count for name, count in counts.items()}

    @property
    def closed(self) -> bool:
        return self._remote.closed

    def close(self) -> None:
        """Close the connections and stop the loop thread; idempotent."""
        self._remote.close()

    async def aclose(self) -> None:
        """`close` for the daemon's shutdown on its event loop (joining the loop thread blocks)."""
        await asyncio.to_thread(self._remote.close)

    async def _ask(self, text: str, schema: Schema) -> SlotSets:
        cfg = self.config
        fmt = json_schema_format(f"{schema.name}_query", answer_schema(schema))
        with self._lock:
            self._counts["requests"] += 1
        result = await self._remote.client.chat(
            parsing_messages(schema, text, cfg.system_prompt),
            max_tokens=cfg.max_tokens,
            temperature=0.0,
            response_format=fmt,
        )
        if result.finish_reason == "length":
            raise InvalidAnswer(f"answer cut off at max_tokens={cfg.max_tokens}: {result.text[:200]!r}")
        return read_answer(result.text, schema)

    def _without_request(self, text: str, schema: Schema, embedded: ParsedQuery) -> ParsedQuery | None:
        """The answer from the cache, or the embedded parse while the server is taken for down."""
        known = self._known(text, schema)
        if known is not None:
            return llm_parsed(known, embedded, schema)
        return embedded if self._skip() else None

    def _known(self, text: str, schema: Schema) -> SlotSets | None:
        if not self.config.cache_size:
            return None
        key = (schema.id, _cache_text(text))
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                self._count("cache_hits")
            return found

    def _skip(self) -> bool:
        """True (a counted fallback) while the server is taken for down."""
        with self._lock:
            if time.monotonic() >= self._down_until:
                return False
            self._count("server_down")
            return True

    def _accept(self, text: str, schema: Schema, slots: SlotSets, embedded: ParsedQuery) -> ParsedQuery:
        with self._lock:
            self._count("answers")
            if self.config.cache_size:
                self._cache[(schema.id, _cache_text(text))] = slots
                if len(self._cache) > self.config.cache_size:
                    self._cache.popitem(last=False)
        return llm_parsed(slots, embedded, schema)

    def _fallback(self, err: BackendFailed | BackendDead, embedded: ParsedQuery) -> ParsedQuery:
        with self._lock:
            if isinstance(err, BackendDead):
                self._count("server_down")
                self._down_until = time.monotonic() + self.config.down_cooldown_s
                why = f"; skipping it for {self.config.down_cooldown_s:g} s"
            else:
                self._count("invalid_answers" if isinstance(err, InvalidAnswer) else "failed")
                why = ""
        log.warning("query parser model failed (%s)%s; using the embedded parser", err, why)
        return embedded

    def _count(self, outcome: str) -> None:
        """One query's outcome, in stats() and in Prometheus; the caller holds the lock."""
        self._counts[outcome] += 1
        PARSES.labels(outcome).inc()


def _cache_text(text: str) -> str:
    """Queries that differ only in case and spacing share one answer."""
    return " ".join(text.lower().split())
