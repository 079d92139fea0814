"""LLM query parser against a real aiohttp server on loopback that answers like an OpenAI server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import REGISTRY as METRICS
from pydantic import ValidationError

from rxd.app import Rxd, build_query_parser
from rxd.config import EmbeddedParserConfig, RxdConfig
from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.engine import Query, RetrievalEngine
from rxd.retrieval.llm_parse import (
    InvalidAnswer,
    LlmParserConfig,
    LlmQueryParser,
    answer_schema,
    read_answer,
)
from rxd.retrieval.parse import QUERY_PARSERS, EmbeddedParser, ParsedQuery, SlotSets, parse_query
from rxd.retrieval.store import RecordStore
from semcom.config import load_config
from semcom.launch import free_port
from semcom.registry import Registry
from semcom.schema import Schema, SchemaRegistry
from tests.fixtures.records import BagOfWordsEncoder, person

REGISTRY = SchemaRegistry.builtin()
PERSON = REGISTRY.get("person/1")
VEHICLE = REGISTRY.get("vehicle/1")
# The embedded lexicon has no "gloaming": it finds the gender only, the model also the colour.
MAUVE = "a lady in a gloaming coat"
MAUVE_SLOTS: SlotSets = {"gender": ("female",), "upper_color": ("purple",)}


def answer(**slots: tuple[str, ...]) -> str:
    """A compact answer for PERSON in the slot-set form: every key present, an empty list where not given."""
    keys = PERSON.answer_keys
    return json.dumps(
        {keys[name]: list(slots.get(name, ())) for name in PERSON.field_names}, separators=(",", ":")
    )


@dataclass
class OpenAIServer:
    """/v1/models and /v1/chat/completions on 127.0.0.1:0, answering with `content` (or `status`)."""

    content: str = ""
    status: int = 200
    delay_s: float = 0.0
    finish_reason: str = "stop"
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.json_response({"error": {"message": "engine broke"}}, status=self.status)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": self.content},
            "finish_reason": self.finish_reason,
        }
        usage = {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140}
        return web.json_response(
            {"id": "c1", "object": "chat.completion", "choices": [choice], "usage": usage}
        )


@pytest_asyncio.fixture
async def server() -> AsyncIterator[OpenAIServer]:
    srv = OpenAIServer(content=answer(**MAUVE_SLOTS))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def config(base_url: str, **over: Any) -> LlmParserConfig:
    server = {"base_url": base_url, "model": "tiny", "timeout_s": 2.0, "max_retries": 0}
    return LlmParserConfig.model_validate({"server": {**server, **over.pop("server", {})}, **over})


@pytest.fixture
def parsers() -> Iterator[list[LlmQueryParser]]:
    """Parsers made by a test, closed after it (each holds a loop thread and connections)."""
    made: list[LlmQueryParser] = []
    yield made
    for parser in made:
        parser.close()


def make(parsers: list[LlmQueryParser], base_url: str, **over: Any) -> LlmQueryParser:
    parser = LlmQueryParser(config(base_url, **over))
    parsers.append(parser)
    return parser


async def parse(parser: LlmQueryParser, text: str, schema: Schema = PERSON) -> ParsedQuery:
    # The synchronous API, as the engine's worker thread calls it; the server runs on this test's loop.
    return await asyncio.to_thread(parser.parse, text, schema)


@pytest.mark.asyncio
async def test_valid_answer_gives_the_models_slots(
    server: OpenAIServer, parsers: list[LlmQueryParser]
) -> None:
    parser = make(parsers, server.base_url)
    parsed = await parse(parser, MAUVE)
    assert parse_query(MAUVE, PERSON).slots == {"gender": ("female",)}
    assert parsed == ParsedQuery(MAUVE_SLOTS, ["gloaming"], "not understood: gloaming", source="llm")
    stats = parser.stats()
    assert (stats["parse_requests"], stats["parse_answers"], stats["parse_fallbacks"]) == (1, 1, 0)
    body = server.requests[0]
    assert body["model"] == "tiny" and body["temperature"] == 0.0
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == answer_schema(PERSON)
    system, user = body["messages"]
    assert system["role"] == "system" and user["content"].endswith(f"Query: {MAUVE}")
    for spec in PERSON.fields:
        assert f"- {spec.label}: {', '.join(spec.values[1:])}" in user["content"]


def test_answer_schema_allows_a_list_of_each_vocabulary() -> None:
    schema = answer_schema(PERSON)
    assert schema["required"] == [spec.label for spec in PERSON.fields]
    assert schema["additionalProperties"] is False
    for spec in PERSON.fields:
        values = list(spec.values[1:])
        assert schema["properties"][spec.label] == {
            "type": "array",
            "items": {"enum": values},
            "maxItems": len(values),
        }
    # Vehicle labels are unique too; a clash would fall back to field names.
    assert list(answer_schema(VEHICLE)["properties"]) == [f.label for f in VEHICLE.fields]


@pytest.mark.parametrize(
    ("text", "slots"),
    [
        (answer(**MAUVE_SLOTS), MAUVE_SLOTS),
        (answer(), {}),
        ('{"gender":"unknown","shoes color":" Black "}', {"shoe_color": ("black",)}),  # the single form
        ('{"shirt color":["red","blue","red"],"gender":null}', {"upper_color": ("blue", "red")}),
        ("{}", {}),
    ],
)
def test_read_answer_maps_values_and_null(text: str, slots: dict[str, tuple[str, ...]]) -> None:
    assert read_answer(text, PERSON) == slots


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a man in white", "not JSON"),
        ('["male"]', "not a JSON object"),
        ('{"gender":"magenta"}', r"'gender': 'magenta' is not a list of male, female"),
        ('{"gender":1}', "'gender': 1 is not a list of"),
        ('{"gender":["male", 2]}', "is not a list of"),
        ('{"gender":"male","hat color":"red"}', "keys the schema does not: 'hat color'"),
    ],
)
def test_read_answer_rejects_what_the_schema_does_not_allow(text: str, why: str) -> None:
    with pytest.raises(InvalidAnswer, match=why):
        read_answer(text, PERSON)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "content",
    [
        "white shirt, black pants",
        '{"gender":"female","shirt color":"magenta"}',
        '{"gender":"female","hat":"red"}',
        '{"gender":"fem',
    ],
    ids=["not-json", "wrong-enum", "wrong-key", "cut-off"],
)
async def test_invalid_answer_falls_back_to_the_embedded_parser(
    server: OpenAIServer, parsers: list[LlmQueryParser], content: str
) -> None:
    server.content = content
    parser = make(parsers, server.base_url)
    text = "a woman in a grey jumper and blue jeans"
    before = invalid_answers_metric()
    parsed = await parse(parser, text)
    assert invalid_answers_metric() == before + 1
    assert parsed == parse_query(text, PERSON)
    assert parsed.slots == {"gender": ("female",), "upper_color": ("grey",), "lower_color": ("blue",)}
    assert parsed.source == "embedded"
    stats = parser.stats()
    assert (stats["parse_fallbacks"], stats["parse_invalid_answers"], stats["parse_answers"]) == (1, 1, 0)


def invalid_answers_metric() -> float:
    found = METRICS.get_sample_value("semcom_rxd_query_parses_total", {"outcome": "invalid_answers"})
    return found or 0.0


@pytest.mark.asyncio
async def test_answer_cut_off_at_max_tokens_falls_back(
    server: OpenAIServer, parsers: list[LlmQueryParser]
) -> None:
    # Valid JSON that still ends at the token limit is cut off; the server says so in finish_reason.
    server.finish_reason = "length"
    parser = make(parsers, server.base_url)
    parsed = await parse(parser, MAUVE)
    assert parsed.source == "embedded" and parser.stats()["parse_invalid_answers"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "delay_s"), [(500, 0.0), (400, 0.0), (200, 1.0)], ids=["500", "400", "slow"]
)
async def test_failed_request_falls_back(
    server: OpenAIServer, parsers: list[LlmQueryParser], status: int, delay_s: float
) -> None:
    server.status, server.delay_s = status, delay_s
    parser = make(parsers, server.base_url, server={"timeout_s": 0.3})
    parsed = await parse(parser, MAUVE)
    assert parsed == parse_query(MAUVE, PERSON)
    stats = parser.stats()
    assert (stats["parse_fallbacks"], stats["parse_failed"], stats["parse_server_down"]) == (1, 1, 0)
    # A failure for one request is no reason to skip the server for the next one.
    server.status, server.delay_s = 200, 0.0
    assert (await parse(parser, MAUVE)).slots == MAUVE_SLOTS


@pytest.mark.asyncio
async def test_server_down_falls_back_then_is_skipped_for_the_cooldown(parsers: list[LlmQueryParser]) -> None:
    port = free_port()
    patient = make(parsers, f"http://127.0.0.1:{port}/v1", down_cooldown_s=600.0)
    eager = make(parsers, f"http://127.0.0.1:{port}/v1", down_cooldown_s=0.0)
    for parser in (patient, eager):
        parsed = await parse(parser, MAUVE)
        assert parsed == parse_query(MAUVE, PERSON)
        assert (parser.stats()["parse_server_down"], parser.stats()["parse_fallbacks"]) == (1, 1)
    srv = OpenAIServer(content=answer(**MAUVE_SLOTS), port=port)
    await srv.start()
    try:
        # The server is back: the patient parser does not ask yet, the eager one does.
        assert (await parse(patient, MAUVE)).source == "embedded"
        assert srv.requests == []
        assert patient.stats()["parse_server_down"] == 2
        assert (await parse(eager, MAUVE)).slots == MAUVE_SLOTS
        assert len(srv.requests) == 1
    finally:
        await srv.stop()


@pytest.mark.asyncio
async def test_repeated_query_asks_once(server: OpenAIServer, parsers: list[LlmQueryParser]) -> None:
    parser = make(parsers, server.base_url)
    first = await parse(parser, MAUVE)
    again = await parse(parser, "  A lady in a GLOAMING coat ")
    assert again == first and len(server.requests) == 1
    assert parser.stats()["parse_cache_hits"] == 1
    uncached = make(parsers, server.base_url, cache_size=0)
    for _ in range(2):
        await parse(uncached, MAUVE)
    assert len(server.requests) == 3


@pytest.mark.asyncio
async def test_aparse_runs_on_an_event_loop(server: OpenAIServer, parsers: list[LlmQueryParser]) -> None:
    parser = make(parsers, server.base_url)
    parsed = await parser.aparse(MAUVE, PERSON)
    assert parsed.slots == MAUVE_SLOTS and parsed.source == "llm"
    server.content = "nonsense"
    assert await parser.aparse("a man in red shoes", PERSON) == parse_query("a man in red shoes", PERSON)
    assert parser.stats()["parse_invalid_answers"] == 1


@pytest.mark.asyncio
async def test_query_naming_no_attribute_gets_the_help_note(
    server: OpenAIServer, parsers: list[LlmQueryParser]
) -> None:
    server.content = answer()
    parsed = await parse(make(parsers, server.base_url), "a cat on a skateboard")
    embedded = parse_query("a cat on a skateboard", PERSON)
    assert parsed.slots == {} and parsed.unmatched == embedded.unmatched == ["cat", "skateboard"]
    assert parsed.note == embedded.note
    assert parsed.note.startswith(
        "no attribute understood; not understood: cat, skateboard; ask about gender"
    )


@pytest.mark.asyncio
async def test_engine_ranks_by_the_models_slots(
    server: OpenAIServer, parsers: list[LlmQueryParser], tmp_path: Path
) -> None:
    parser = make(parsers, server.base_url)
    store = RecordStore(tmp_path / "index.db", REGISTRY)
    engine = RetrievalEngine(REGISTRY, store, TemplateDescriber(), BagOfWordsEncoder(), parser=parser)
    engine.ingest(
        [
            person(1, gender="female", upper_color="red"),
            person(2, gender="female", upper_color="purple", lower_color="black"),
            person(3, gender="male", upper_color="purple"),
            person(4),
        ]
    )
    result = await asyncio.to_thread(engine.query, Query(text=MAUVE, schema_id=PERSON.id))
    assert result.slots == MAUVE_SLOTS and result.note == "not understood: gloaming"
    assert [h.record.record_id for h in result.hits][:2] == [2, 4]  # all slots match, then all unknown
    assert result.hits[0].matched_slots == ("gender", "upper_color")
    assert result.hits[1].unknown_slots == ("gender", "upper_color")
    # A filter still wins over a slot the model read from the text.
    filtered = await asyncio.to_thread(
        engine.query, Query(text=MAUVE, filters={"upper_color": "red"}, schema_id=PERSON.id)
    )
    assert filtered.hits[0].record.record_id == 1
    assert "filter upper_color=red overrides 'purple' from the text" in filtered.note
    stats = engine.stats()
    assert (stats["parse_requests"], stats["parse_cache_hits"], stats["parse_fallbacks"]) == (1, 1, 0)


def test_embedded_parser_is_the_default_and_counts_nothing(tmp_path: Path) -> None:
    engine = RetrievalEngine(
        REGISTRY, RecordStore(tmp_path / "i.db", REGISTRY), TemplateDescriber(), BagOfWordsEncoder()
    )
    assert isinstance(engine.parser, EmbeddedParser)
    assert not any(key.startswith("parse_") for key in engine.stats())
    assert isinstance(build_query_parser(RxdConfig().query.parser), EmbeddedParser)


def test_config_selects_the_parser_by_kind(parsers: list[LlmQueryParser]) -> None:
    cfg = RxdConfig.model_validate(
        {"query": {"parser": {"kind": "llm", "server": {"base_url": "http://10.0.0.5:8002/v1"}}}}
    )
    parser_cfg = cfg.query.parser
    assert isinstance(parser_cfg, LlmParserConfig)
    # Keys left out of the server section take the interactive defaults.
    assert (parser_cfg.server.timeout_s, parser_cfg.server.max_retries) == (10.0, 1)
    assert parser_cfg.server.base_url == "http://10.0.0.5:8002/v1"
    built = build_query_parser(parser_cfg)
    assert isinstance(built, LlmQueryParser)
    parsers.append(built)
    assert QUERY_PARSERS.names() == ["embedded", "llm"]
    with pytest.raises(ValidationError, match=r"query\.parser"):
        RxdConfig.model_validate({"query": {"parser": {"kind": "regex"}}})
    with pytest.raises(ValidationError, match="max_tokens"):
        RxdConfig.model_validate({"query": {"parser": {"kind": "llm", "max_tokens": 0}}})


def test_a_parser_registered_on_a_fresh_registry_is_built(parsers: list[LlmQueryParser]) -> None:
    registry: Registry[Any] = Registry("query parser")
    registry.register("embedded", lambda cfg: EmbeddedParser())
    assert isinstance(build_query_parser(EmbeddedParserConfig(), registry), EmbeddedParser)


def test_gpu_example_config_asks_the_llm_server(parsers: list[LlmQueryParser]) -> None:
    path = Path(__file__).resolve().parents[2] / "deploy" / "configs" / "rxd-gpu.toml"
    cfg = load_config(RxdConfig, path=path)
    parser_cfg = cfg.query.parser
    assert isinstance(parser_cfg, LlmParserConfig) and cfg.generate.kind == "llm"
    assert parser_cfg.server.model == "rxd-llm" and parser_cfg.server.timeout_s == 10.0


@pytest.mark.asyncio
async def test_rxd_builds_the_configured_parser_and_closes_it(server: OpenAIServer, tmp_path: Path) -> None:
    cfg = load_config(
        RxdConfig,
        overrides=[
            "server.listen=127.0.0.1:0",
            "metrics.enabled=false",
            "http.enabled=false",
            f"index.path={tmp_path / 'index.db'}",
            "query.parser.kind=llm",
            f"query.parser.server.base_url={server.base_url}",
        ],
    )
    rxd = Rxd(cfg, embedder=BagOfWordsEncoder())
    parser = rxd.engine.parser
    assert isinstance(parser, LlmQueryParser)
    await rxd.start()
    try:
        await asyncio.to_thread(rxd.engine.ingest, [person(1, gender="female", upper_color="purple")])
        result = await rxd.core.query(rxd.core.query_from(MAUVE, {}))
        assert result.slots == MAUVE_SLOTS and result.hits[0].record.record_id == 1
        assert rxd.core.stats()["index"]["parse_answers"] == 1
        assert server.requests[0]["model"] == "tiny"  # the server's first model, asked for by the client
    finally:
        await rxd.stop(0.5)
    assert parser.closed
