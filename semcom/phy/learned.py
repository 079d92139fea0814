"""Learned channel adaptation (the paper's module): per-field understanding <-> trained linear maps <-> IQ.

Each schema field f with V_f values (index 0 = unknown) gets S_f complex channel symbols per record:

- Encoder: a codebook C_f of V_f rows in C^{S_f}, trained end to end (bench/learned_phy_train.py). A
  probability vector p over the field's values (a one-hot for a hard value) maps to p @ C_f, scaled to the
  energy S_f, so every field, every record and every burst has mean |x|^2 = 1 per complex symbol exactly
  (a constant-energy code: the average power constraint holds for any input, not only on average).
- Channel: y = h x + n with n ~ CN(0, N0) (block fading: one h per burst, estimated from the burst's
  pilots and its digital header, see learned_link.py).
- Decoder: the second linear map, logits_f = (|h|^2 / N0) Re/Im(y / h) @ W_f + a_f, then softmax. For a
  known constant-energy codebook the exact posterior has this form (W = 2 C^T, a = log prior; the
  -|c|^2 / N0 term is the same for every value), so the decoder is a linear layer whose output the channel
  SNR scales: its probabilities follow the SNR, and erased or faded-out symbols (y / h taken as 0) leave
  exactly the prior a_f instead of a confident guess.

Inference is numpy only (no torch): the daemons load a JSON model file of a few kB (semcom/phy/weights/).
A model is named "learned/<name>"; `load_model` refuses a missing, untrained or mismatched file with
InvalidInput.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from semcom.errors import InvalidInput
from semcom.schema import Schema, SchemaRegistry

MODEL_FORMAT = "semcom-learned-phy/1"
LEARNED_PREFIX = "learned/"
# Effective SNRs above this (linear 1e5 = 50 dB) add nothing but overflow risk to the logits.
_MAX_SNR_LINEAR = 1e5
# A trained codebook's closest pair of codewords is far apart; an untrained one (zeros, a copied row) is not.
_MIN_CODEWORD_DISTANCE = 1e-3
_ENERGY_TOLERANCE = 1e-4

FloatArray = NDArray[np.float64]
ComplexArray = NDArray[np.complex64]


class ModelMismatch(InvalidInput):
    """A learned burst names a model this side does not hold, or other weights under the same name."""


@dataclass(frozen=True)
class FieldMap:
    """One field's trained maps: codebook (V, S) complex, decoder weight (2S, V), prior logits (V)."""

    name: str
    values: tuple[str, ...]
    codebook: NDArray[np.complex128]
    weight: FloatArray
    prior_logit: FloatArray

    @property
    def symbols(self) -> int:
        return int(self.codebook.shape[1])

    def encode(self, probs: FloatArray) -> NDArray[np.complex128]:
        """(n, V) probability rows -> (n, S) symbols of energy S per row (unit energy per symbol)."""
        mixed = probs @ self.codebook
        energy = np.sum(np.abs(mixed) ** 2, axis=1, keepdims=True)
        if np.any(energy <= 0):
            raise InvalidInput(f"field {self.name!r}: a probability row maps to the zero vector")
        out: NDArray[np.complex128] = mixed * np.sqrt(self.symbols / energy)
        return out

    def decode(self, equalised: NDArray[np.complex128], snr_linear: FloatArray) -> FloatArray:
        """(n, S) equalised symbols (NaN = erased) and (n,) effective SNRs -> (n, V) probabilities."""
        known = np.isfinite(equalised)
        y = np.where(known, equalised, 0)
        features = np.concatenate([y.real, y.imag], axis=1)
        logits = snr_linear[:, None] * (features @ self.weight) + self.prior_logit
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        probs: FloatArray = weights / weights.sum(axis=1, keepdims=True)
        return probs


@dataclass(frozen=True)
class LearnedModel:
    """A trained encoder/decoder pair for one schema; `fields` are in the schema's order."""

    name: str
    schema_id: str
    fields: tuple[FieldMap, ...]
    training: Mapping[str, Any]

    @property
    def symbols_per_record(self) -> int:
        """Channel symbols one record's fields take (the digital header not counted)."""
        return sum(f.symbols for f in self.fields)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def encode_fields(self, probs_per_field: Sequence[NDArray[np.floating[Any]]]) -> ComplexArray:
        """Per field an (n, V_f) array of probabilities (rows sum to 1; one-hot for hard values) ->
        (n, symbols_per_record) complex64 symbols, record after record, fields in schema order."""
        if len(probs_per_field) != len(self.fields):
            raise InvalidInput(
                f"model {self.name!r} encodes {len(self.fields)} fields, got {len(probs_per_field)}"
            )
        parts = []
        count = None
        for spec, probs in zip(self.fields, probs_per_field, strict=True):
            p = np.asarray(probs, dtype=np.float64)
            if p.ndim != 2 or p.shape[1] != len(spec.values) or (count is not None and p.shape[0] != count):
                raise InvalidInput(
                    f"field {spec.name!r}: expected an (n, {len(spec.values)}) probability array with the "
                    f"same n as the other fields, got shape {p.shape}"
                )
            if not (np.isfinite(p).all() and (p >= 0).all() and np.allclose(p.sum(axis=1), 1.0, atol=1e-3)):
                raise InvalidInput(f"field {spec.name!r}: rows must be finite, >= 0 and sum to 1")
            count = p.shape[0]
            parts.append(spec.encode(p))
        return np.concatenate(parts, axis=1).astype(np.complex64)

    def encode_indices(self, indices: NDArray[np.integer[Any]]) -> ComplexArray:
        """(n, fields) value indices (hard values) -> (n, symbols_per_record) complex64 symbols."""
        idx = np.asarray(indices)
        if idx.ndim != 2 or idx.shape[1] != len(self.fields):
            raise InvalidInput(f"expected (n, {len(self.fields)}) field indices, got shape {idx.shape}")
        onehots = []
        for column, spec in enumerate(self.fields):
            values = idx[:, column]
            if values.size and (values.min() < 0 or values.max() >= len(spec.values)):
                raise InvalidInput(f"field {spec.name!r}: index outside 0..{len(spec.values) - 1}")
            onehots.append(np.eye(len(spec.values))[values])
        return self.encode_fields(onehots)

    def decode_fields(
        self,
        symbols: NDArray[np.complexfloating[Any, Any]],
        *,
        noise_var: float | FloatArray,
        gain: complex | NDArray[np.complexfloating[Any, Any]] = 1.0,
    ) -> list[FloatArray]:
        """(n, symbols_per_record) received symbols y = h x + n -> per field (n, V_f) probabilities.

        `noise_var` is N0 per complex symbol and `gain` the channel's h, each a scalar or one per record (the
        phy's RxResult gives both). NaN symbols are erasures; a zero gain leaves only the prior.
        """
        y = np.asarray(symbols, dtype=np.complex128)
        if y.ndim != 2 or y.shape[1] != self.symbols_per_record:
            raise InvalidInput(
                f"model {self.name!r} decodes (n, {self.symbols_per_record}) symbols, got shape {y.shape}"
            )
        n = y.shape[0]
        h = np.broadcast_to(np.asarray(gain, dtype=np.complex128), (n,))
        n0 = np.broadcast_to(np.asarray(noise_var, dtype=np.float64), (n,))
        if not (np.isfinite(n0).all() and (n0 > 0).all()):
            raise InvalidInput("noise_var must be positive and finite")
        power = np.abs(h) ** 2
        snr = np.minimum(np.divide(power, n0), _MAX_SNR_LINEAR)
        with np.errstate(divide="ignore", invalid="ignore"):
            equalised = np.where(power[:, None] > 0, y / h[:, None], np.nan)
        out = []
        start = 0
        for spec in self.fields:
            out.append(spec.decode(equalised[:, start : start + spec.symbols], snr))
            start += spec.symbols
        return out

    @property
    def digest(self) -> str:
        """16 hex digits of BLAKE2b over the schema id and every weight: a burst's header can name the
        weights it was made with, so a receiver holding other weights refuses it instead of misreading it."""
        h = hashlib.blake2b(self.schema_id.encode(), digest_size=8, person=b"semcom-lphy")
        for f in self.fields:
            h.update(f.name.encode())
            for array in (f.codebook, f.weight, f.prior_logit):
                h.update(
                    np.ascontiguousarray(array, dtype="<c16" if array.dtype.kind == "c" else "<f8").tobytes()
                )
        return h.hexdigest()

    def check_digest(self, digest: str) -> None:
        """ModelMismatch (an InvalidInput) unless `digest` (from a burst) names these weights."""
        if digest != self.digest:
            raise ModelMismatch(
                f"burst was made with learned phy weights {digest!r}; this receiver's {self.name!r} are "
                f"{self.digest!r}: load the same model file on both sides"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document `from_dict` reads (see MODEL_FORMAT)."""
        return {
            "format": MODEL_FORMAT,
            "name": self.name,
            "schema_id": self.schema_id,
            "training": dict(self.training),
            "fields": [
                {
                    "name": f.name,
                    "values": list(f.values),
                    "symbols": f.symbols,
                    "codebook": np.stack([f.codebook.real, f.codebook.imag], axis=-1).tolist(),
                    "weight": f.weight.tolist(),
                    "prior_logit": f.prior_logit.tolist(),
                }
                for f in self.fields
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], schema: Schema, *, source: str = "model") -> LearnedModel:
        """Check a model document against `schema`; InvalidInput names `source` and what is wrong."""
        where = f"learned phy {source}"
        if not isinstance(doc, Mapping) or doc.get("format") != MODEL_FORMAT:
            got = doc.get("format") if isinstance(doc, Mapping) else type(doc).__name__
            raise InvalidInput(f"{where}: format {got!r} is not {MODEL_FORMAT!r}")
        if doc.get("schema_id") != schema.id:
            raise InvalidInput(f"{where}: trained for schema {doc.get('schema_id')!r}, not {schema.id!r}")
        training = doc.get("training")
        if (
            not isinstance(training, Mapping)
            or not isinstance(training.get("steps"), int)
            or training["steps"] < 1
        ):
            raise InvalidInput(
                f"{where}: untrained (training.steps missing or 0); run bench/learned_phy_train.py"
            )
        items = doc.get("fields")
        if not isinstance(items, list) or [i.get("name") for i in items if isinstance(i, Mapping)] != list(
            schema.field_names
        ):
            raise InvalidInput(f"{where}: fields do not match {schema.id} ({', '.join(schema.field_names)})")
        fields = tuple(_field_from_dict(item, schema, where) for item in items)
        return cls(name=str(doc.get("name", source)), schema_id=schema.id, fields=fields, training=training)


def _array(item: Mapping[str, Any], key: str, shape: tuple[int, ...], where: str) -> FloatArray:
    try:
        out = np.asarray(item[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInput(f"{where}: {key} missing or not numeric") from err
    if out.shape != shape:
        raise InvalidInput(f"{where}: {key} has shape {out.shape}, expected {shape}")
    if not np.isfinite(out).all():
        raise InvalidInput(f"{where}: {key} holds non-finite numbers")
    return out


def _field_from_dict(item: Mapping[str, Any], schema: Schema, where: str) -> FieldMap:
    spec = schema.field(str(item["name"]))
    where = f"{where}: field {spec.name!r}"
    if tuple(item.get("values", ())) != spec.values:
        raise InvalidInput(
            f"{where}: values {item.get('values')} differ from the schema's {list(spec.values)}"
        )
    symbols = item.get("symbols")
    if not isinstance(symbols, int) or symbols < 1:
        raise InvalidInput(f"{where}: symbols must be a positive integer, got {symbols!r}")
    count = len(spec.values)
    pairs = _array(item, "codebook", (count, symbols, 2), where)
    codebook = pairs[..., 0] + 1j * pairs[..., 1]
    energy = np.sum(np.abs(codebook) ** 2, axis=1)
    if np.abs(energy - symbols).max() > _ENERGY_TOLERANCE * symbols:
        raise InvalidInput(f"{where}: codewords must have energy {symbols} (unit per symbol), got {energy}")
    gaps = np.abs(codebook[:, None, :] - codebook[None, :, :])
    distance = np.sqrt(np.sum(gaps**2, axis=2))
    np.fill_diagonal(distance, math.inf)
    if distance.min() < _MIN_CODEWORD_DISTANCE:
        raise InvalidInput(f"{where}: two codewords coincide (untrained?); distance {distance.min():.2g}")
    return FieldMap(
        name=spec.name,
        values=spec.values,
        codebook=codebook,
        weight=_array(item, "weight", (2 * symbols, count), where),
        prior_logit=_array(item, "prior_logit", (count,), where),
    )


def builtin_models() -> list[str]:
    """Names of the models shipped in semcom/phy/weights/ ("person-s2", ...)."""
    folder = resources.files("semcom.phy").joinpath("weights")
    return sorted(e.name.removesuffix(".json") for e in folder.iterdir() if e.name.endswith(".json"))


def learned_name(text: str) -> str | None:
    """ "learned/person-s2" -> "person-s2"; None for a digital MCS spelling ("qpsk/ldpc_r12")."""
    if not text.startswith(LEARNED_PREFIX):
        return None
    name = text.removeprefix(LEARNED_PREFIX)
    if not name:
        raise InvalidInput(f"{text!r}: name the model, e.g. learned/{'|'.join(builtin_models())}")
    return name


def load_model(name_or_path: str | Path, schema: Schema) -> LearnedModel:
    """A shipped model by name ("person-s2", or "learned/person-s2") or a JSON file by path, checked
    against `schema`; InvalidInput when it is missing, unreadable, untrained or made for another schema."""
    doc, source = _read_model(name_or_path)
    return LearnedModel.from_dict(doc, schema, source=source)


def load_model_any(name_or_path: str | Path, registry: SchemaRegistry) -> LearnedModel:
    """As `load_model`, checked against the registry's schema that the model names (a receiver holding
    models for several schemas); InvalidInput when that schema is unknown."""
    doc, source = _read_model(name_or_path)
    schema_id = doc.get("schema_id") if isinstance(doc, Mapping) else None
    if not isinstance(schema_id, str) or schema_id not in registry.ids():
        raise InvalidInput(f"learned phy {source}: schema {schema_id!r} is not one this side knows")
    return LearnedModel.from_dict(doc, registry.get(schema_id), source=source)


def _read_model(name_or_path: str | Path) -> tuple[Any, str]:
    text = str(name_or_path)
    name = learned_name(text) or text
    path = Path(name)
    if path.suffix != ".json":
        known = builtin_models()
        if name not in known:
            raise InvalidInput(f"no learned phy model {name!r}; shipped: {', '.join(known) or 'none'}")
        entry = resources.files("semcom.phy").joinpath("weights", f"{name}.json")
        raw, source = entry.read_text(encoding="utf-8"), f"semcom/phy/weights/{name}.json"
    else:
        try:
            raw, source = path.read_text(encoding="utf-8"), str(path)
        except OSError as err:
            raise InvalidInput(f"cannot read learned phy model {path}: {err.strerror or err}") from err
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"learned phy model {source}: not valid JSON: {err}") from err
    return doc, source
