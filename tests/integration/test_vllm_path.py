"""The GPU serving path on vLLM's CPU build: tiny random LLM and VLM behind real vLLM servers (slow)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from rxd.generate.llm import LlmDescriber, LlmDescriberConfig
from rxd.retrieval.describe import TemplateDescriber
from rxd.retrieval.engine import Query, RetrievalEngine
from rxd.retrieval.llm_parse import LlmParserConfig, LlmQueryParser
from rxd.retrieval.store import RecordStore
from semcom.data import data_dir
from semcom.errors import BackendDead, BackendFailed
from semcom.inference.openai_client import OpenAIBackendConfig, OpenAIClient, image_part, json_schema_format
from semcom.launch import free_port
from semcom.schema import Schema, SchemaRegistry
from tests.fixtures.records import BagOfWordsEncoder
from tests.fixtures.records import person as person_record
from tests.fixtures.tiny_models import build_with
from txd.understanding.vlm import VlmConfig, VlmUnderstander, answer_schema, understanding_prompt

# Startup takes 35-80 s per server on an idle 2-core machine and several minutes on a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
READY_TIMEOUT_S = 600.0
FIRST_REQUEST_TIMEOUT_S = 300.0
MAX_MODEL_LEN = 1024
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}
PERSON_FIELDS = [
    {
        "gender": "male",
        "upper_color": "white",
        "sleeve": "long",
        "lower_color": "black",
        "shoe_color": "black",
    },
    {"gender": "female", "upper_color": "red", "lower_length": "short"},
    {},
]


@dataclass
class VllmServer:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def config(self, **over: object) -> OpenAIBackendConfig:
        opts: dict[str, object] = {"base_url": self.base_url, "model": self.name, "timeout_s": 120.0}
        return OpenAIBackendConfig.model_validate({**opts, **over})

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


def start_vllm(name: str, model: Path, cpu: int, log: Path) -> VllmServer:
    """One vLLM OpenAI-compatible server on a free loopback port, pinned to one core, in its own session."""
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": str(cpu),  # two servers on two cores must not share one
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    cmd = [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.launchers.api_server.entry",
        *("--model", str(model), "--served-model-name", name),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager"),
        *("--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS)),
    ]
    with log.open("wb") as out:
        # A new session, so that stopping reaches the engine processes vLLM forks as well.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent, start_new_session=True
        )
    return VllmServer(name, proc, f"http://127.0.0.1:{port}/v1", log)


def wait_ready(servers: list[VllmServer], timeout_s: float) -> float:
    """Poll /v1/models until every server lists its model; fails with the log of one that died."""
    t0 = time.monotonic()
    pending = list(servers)
    while pending:
        for server in list(pending):
            if server.proc.poll() is not None:
                pytest.fail(f"vLLM {server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
            try:
                response = httpx.get(f"{server.base_url}/models", timeout=5.0)
                if response.status_code == 200 and server.name in response.text:
                    pending.remove(server)
            except httpx.TransportError:
                pass
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"vLLM {pending[0].name} not ready after {timeout_s} s:\n{pending[0].log_tail()}")
        if pending:
            time.sleep(1.0)  # polling a subprocess: there is no event to wait on
    return time.monotonic() - t0


def stop_vllm(server: VllmServer, grace_s: float = 30.0) -> None:
    """SIGTERM to the server's session, then SIGKILL if it has not exited within `grace_s`."""
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)  # also engine processes left behind by a clean exit
    except ProcessLookupError:
        return
    server.proc.wait(10.0)


async def warm_up(llm: VllmServer, vlm: VllmServer) -> None:
    """The first request after start compiles and allocates (~20 s or more): take it out of the tests."""
    image = np.full((112, 56, 3), 128, np.uint8)
    async with OpenAIClient(llm.config(timeout_s=FIRST_REQUEST_TIMEOUT_S)) as client:
        await client.chat([{"role": "user", "content": "warm up"}], max_tokens=4)
    async with VlmUnderstander(
        VlmConfig(server=vlm.config(timeout_s=FIRST_REQUEST_TIMEOUT_S))
    ) as vlm_backend:
        await vlm_backend.understand([image], SchemaRegistry.builtin().get("person/1"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VllmServer, VllmServer]]:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} is missing: run scripts/setup_vllm_cpu.sh first (it creates .venv-vllm)")
    work = tmp_path_factory.mktemp("vllm")
    t0 = time.monotonic()
    build_with(VLLM_PYTHON, "all", work / "models")
    print(f"tiny models built in {time.monotonic() - t0:.1f} s")
    llm = start_vllm("tiny-llm", work / "models" / "llm", 0, work / "llm.log")
    vlm = start_vllm("tiny-vlm", work / "models" / "vlm", 1, work / "vlm.log")
    try:
        print(f"vLLM servers ready in {wait_ready([llm, vlm], READY_TIMEOUT_S):.1f} s")
        t0 = time.monotonic()
        asyncio.run(warm_up(llm, vlm))
        print(f"warm-up requests took {time.monotonic() - t0:.1f} s")
        yield llm, vlm
    finally:
        stop_vllm(llm)
        stop_vllm(vlm)


@pytest.fixture(scope="module")
def person() -> Schema:
    return SchemaRegistry.builtin().get("person/1")


def peta_crops(per_subset: int = 2) -> list[NDArray[np.uint8]]:
    """Real pedestrian crops: the first few of each PETA subset (sizes vary from 17x39 to 390x1000 px)."""
    root = data_dir() / "peta" / "images"
    if not root.is_dir():
        pytest.skip(f"PETA crops not found at {root} (set SEMCOM_DATA_DIR)")
    crops: list[NDArray[np.uint8]] = []
    for subset in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(subset.iterdir())[:per_subset]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            assert image is not None, f"cannot read {path}"
            crops.append(np.asarray(image, dtype=np.uint8))
    return crops


@pytest.mark.data
@pytest.mark.asyncio
async def test_vlm_gives_schema_valid_records_for_peta_crops(
    servers: tuple[VllmServer, VllmServer], person: Schema
) -> None:
    crops = peta_crops()
    cfg = VlmConfig(server=servers[1].config(max_concurrency=4), max_side_px=224)
    async with VlmUnderstander(cfg) as vlm:
        out = await vlm.understand(crops, person)
        assert (vlm.requests, vlm.failures, vlm.invalid_values) == (len(crops), 0, 0)
    assert len(out) == len(crops) >= 8
    for understanding in out:
        assert list(understanding.fields) == list(person.field_names)
        for spec in person.fields:
            assert understanding.fields[spec.name] in spec.values
            assert 0.0 < understanding.confidence[spec.name] <= 1.0


@pytest.mark.asyncio
async def test_vlm_answer_is_compact_json_in_schema_order(
    servers: tuple[VllmServer, VllmServer], person: Schema
) -> None:
    crop = np.zeros((96, 40, 3), np.uint8)
    crop[:48] = (255, 255, 255)
    content = [image_part(crop), {"type": "text", "text": understanding_prompt(person)}]
    async with OpenAIClient(servers[1].config()) as client:
        fmt = json_schema_format("person", answer_schema(person))
        result = await client.chat(
            [{"role": "user", "content": content}], max_tokens=200, response_format=fmt
        )
    answer = json.loads(result.text)
    assert list(answer) == list(person.answer_keys.values())
    # disable_any_whitespace: no spaces or newlines between tokens of the JSON grammar
    assert result.text == json.dumps(answer, separators=(",", ":"))


@pytest.mark.asyncio
async def test_llm_describer_streams_the_same_text_as_without_streaming(
    servers: tuple[VllmServer, VllmServer], person: Schema
) -> None:
    # A random model's greedy choice is often a whitespace token, which cleans to an empty (failed)
    # description; seeded sampling gives visible, reproducible text.
    common = {"server": servers[0].config(), "max_tokens": 24, "temperature": 1.0, "seed": 7}
    streamed = LlmDescriber(LlmDescriberConfig.model_validate({**common, "stream": True}))
    plain = LlmDescriber(LlmDescriberConfig.model_validate({**common, "stream": False}))
    try:
        texts = [await asyncio.to_thread(streamed.describe, person, f) for f in PERSON_FIELDS]
        assert all(isinstance(t, str) and t.strip() for t in texts)
        assert [plain.describe(person, f) for f in PERSON_FIELDS] == texts
        assert await streamed.adescribe_many(person, PERSON_FIELDS) == texts
        assert plain.describe_many(person, PERSON_FIELDS) == texts
    finally:
        streamed.close()
        plain.close()


@pytest.mark.asyncio
async def test_client_error_carries_the_servers_message(servers: tuple[VllmServer, VllmServer]) -> None:
    async with OpenAIClient(servers[0].config()) as client:
        with pytest.raises(BackendFailed, match=r"HTTP 400: .*max_model_len"):
            await client.chat([{"role": "user", "content": "x"}], max_tokens=MAX_MODEL_LEN + 1)
        with pytest.raises(BackendFailed, match=r"HTTP 400: .*max_model_len"):
            async for _ in client.stream_chat(
                [{"role": "user", "content": "x"}], max_tokens=MAX_MODEL_LEN + 1
            ):
                pass
    async with OpenAIClient(servers[0].config(model="no-such-model")) as client:
        with pytest.raises(BackendFailed, match=r"HTTP 404: .*no-such-model"):
            await client.chat([{"role": "user", "content": "x"}])


def test_server_down_is_dead(servers: tuple[VllmServer, VllmServer], person: Schema) -> None:
    down = servers[0].config(
        base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1, retry_backoff_s=0.0
    )
    describer = LlmDescriber(LlmDescriberConfig(server=down))
    try:
        with pytest.raises(BackendDead, match="cannot reach"):
            describer.describe(person, PERSON_FIELDS[0])
    finally:
        describer.close()


QUERIES = [
    "the man wearing a white long-sleeved shirt, black pants and black shoes",
    "a lady in a mauve coat",
    "a cat on a skateboard",
]


def test_llm_query_parser_gives_schema_valid_slots_through_the_engine(
    servers: tuple[VllmServer, VllmServer], person: Schema, tmp_path: Path
) -> None:
    # The random model's choices are noise; guided JSON must still make every answer schema-valid.
    registry = SchemaRegistry.builtin()
    parser = LlmQueryParser(LlmParserConfig(server=servers[0].config()))
    store = RecordStore(tmp_path / "index.db", registry)
    engine = RetrievalEngine(registry, store, TemplateDescriber(), BagOfWordsEncoder(), parser=parser)
    engine.ingest([person_record(i, time_s=float(i), **f) for i, f in enumerate(PERSON_FIELDS)])
    try:
        for text in QUERIES:
            parsed = parser.parse(text, person)
            assert parsed.source == "llm", f"fell back for {text!r}: {parser.stats()}"
            print(f"{text!r} -> {parsed.slots}")
            for name, values in parsed.slots.items():
                assert values and set(values) <= set(person.field(name).values[1:])
            result = engine.query(Query(text=text, schema_id=person.id, top_k=10))
            assert result.slots == parsed.slots
            assert len(result.hits) == len(PERSON_FIELDS)
            for hit in result.hits:
                outcome = (*hit.matched_slots, *hit.unknown_slots, *hit.contradicted_slots)
                assert sorted(outcome) == sorted(result.slots)
        stats = engine.stats()
        assert stats["parse_requests"] == stats["parse_answers"] == len(QUERIES)
        assert (stats["parse_cache_hits"], stats["parse_fallbacks"]) == (len(QUERIES), 0)
    finally:
        parser.close()
        store.close()
