"""Learned channel adaptation: power, decoding vs SNR, the digital/learned split, refusing bad models."""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from channel_sim.models import AwgnConfig, ChannelBurst, ChannelChain, RayleighConfig
from semcom.codec import decode_records, encode_records, frame_bits
from semcom.errors import CrcError, DecodeError, InvalidInput
from semcom.phy import Mcs, burst_symbols
from semcom.phy.learned import LearnedModel, builtin_models, learned_name, load_model
from semcom.phy.learned_link import (
    header_frame_bits,
    join_frame,
    learned_burst_symbols,
    receive_learned,
    record_header_bits,
    split_frame,
    transmit_learned,
)
from semcom.record import Record
from semcom.schema import Schema, SchemaRegistry

SCHEMA = SchemaRegistry.builtin().get("person/1")
MODELS = ("person-s1", "person-s2", "person-s3")
QPSK = Mcs("qpsk", "ldpc_r12")


def uniform_indices(n: int, rng: np.random.Generator, schema: Schema = SCHEMA) -> NDArray[np.int64]:
    return np.stack([rng.integers(0, len(f.values), n) for f in schema.fields], axis=1)


def awgn(x: NDArray[np.complex64], snr_db: float, rng: np.random.Generator) -> NDArray[np.complex128]:
    n0 = 10 ** (-snr_db / 10)
    noise = rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)
    return (x + math.sqrt(n0 / 2) * noise).astype(np.complex128)


def field_error_rate(model: LearnedModel, snr_db: float, seed: int, n: int = 4000) -> float:
    rng = np.random.default_rng(seed)
    truth = uniform_indices(n, rng)
    probs = model.decode_fields(
        awgn(model.encode_indices(truth), snr_db, rng), noise_var=10 ** (-snr_db / 10)
    )
    decided = np.stack([p.argmax(axis=1) for p in probs], axis=1)
    return float(np.mean(decided != truth))


def frame_of(n: int, rng: np.random.Generator) -> bytes:
    picks = uniform_indices(n, rng)
    records = [
        Record(
            schema_id=SCHEMA.id,
            stream_id="cam",
            track_id=int(rng.integers(0, 4096)),
            record_id=1000 + i,
            time_s=1.7e9 + 0.1 * i,
            location_id=int(rng.integers(0, 256)),
            fields={f.name: f.values[v] for f, v in zip(SCHEMA.fields, pick, strict=True)},
        )
        for i, pick in enumerate(picks)
    ]
    return encode_records(records, SCHEMA)


def model_doc(name: str = "person-s2") -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "semcom" / "phy" / "weights" / f"{name}.json"
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def test_shipped_models_load() -> None:
    assert set(MODELS) <= set(builtin_models())
    for name in MODELS:
        model = load_model(f"learned/{name}", SCHEMA)
        assert model.field_names == SCHEMA.field_names
        assert model.symbols_per_record == 6 * int(name[-1])


@pytest.mark.parametrize("name", MODELS)
def test_power_constraint(name: str) -> None:
    """Seed 0: hard values, soft (Dirichlet) probability rows and a whole burst all have mean |x|^2 = 1
    within 1e-5: every record's codewords have energy S_f exactly (a constant-energy code)."""
    model = load_model(name, SCHEMA)
    rng = np.random.default_rng(0)
    x = model.encode_indices(uniform_indices(1000, rng))
    per_record = np.mean(np.abs(x) ** 2, axis=1)
    assert np.abs(per_record - 1).max() < 1e-5
    soft = [rng.dirichlet(np.ones(len(f.values)), 500) for f in SCHEMA.fields]
    assert np.abs(np.mean(np.abs(model.encode_fields(soft)) ** 2, axis=1) - 1).max() < 1e-5
    burst = transmit_learned(frame_of(8, rng), model, SCHEMA)
    assert abs(float(np.mean(np.abs(burst.symbols) ** 2)) - 1) < 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_error_free_at_high_snr(name: str) -> None:
    """Seed 1, 4000 uniform records at 30 dB: no field errors (the s1 model's closest colour codewords are
    11 noise standard deviations apart there)."""
    assert field_error_rate(load_model(name, SCHEMA), 30.0, seed=1) == 0.0


@pytest.mark.parametrize("name", MODELS)
def test_degradation_is_monotone(name: str) -> None:
    """Seed 2, 4000 uniform records per point: the field error rate does not rise with SNR (tolerance
    0.002 absolute, about 3 standard errors at the lowest nonzero rates), and 3 dB is clearly worse than
    30 dB."""
    model = load_model(name, SCHEMA)
    rates = [field_error_rate(model, snr, seed=2) for snr in (3.0, 6.0, 9.0, 15.0, 30.0)]
    assert all(later <= earlier + 0.002 for earlier, later in itertools.pairwise(rates)), rates
    assert rates[0] > 0.01 > rates[-1], rates


@pytest.mark.parametrize("name", MODELS)
def test_confidence_is_calibrated(name: str) -> None:
    """Seed 7, 4000 records per SNR drawn from the model's own prior (softmax of its prior logits: the
    population it was trained on), at 3 and 9 dB: the mean probability of the chosen values is the fraction
    of right ones within 0.02 (the standard error of either is below 0.004)."""
    model = load_model(name, SCHEMA)
    for snr_db in (3.0, 9.0):
        rng = np.random.default_rng(7)
        priors = [np.exp(f.prior_logit - f.prior_logit.max()) for f in model.fields]
        truth = np.stack([rng.choice(p.size, 4000, p=p / p.sum()) for p in priors], axis=1)
        y = awgn(model.encode_indices(truth), snr_db, rng)
        probs = model.decode_fields(y, noise_var=10 ** (-snr_db / 10))
        confidence = np.mean([p.max(axis=1).mean() for p in probs])
        accuracy = np.mean([np.mean(p.argmax(axis=1) == truth[:, j]) for j, p in enumerate(probs)])
        assert abs(confidence - accuracy) < 0.02, (snr_db, confidence, accuracy)


def test_erased_symbols_fall_back_on_the_prior() -> None:
    model = load_model("person-s2", SCHEMA)
    y = np.full((3, model.symbols_per_record), complex(math.nan, math.nan))
    probs = model.decode_fields(y, noise_var=0.1)
    for spec, p in zip(model.fields, probs, strict=True):
        prior = np.exp(spec.prior_logit - spec.prior_logit.max())
        np.testing.assert_allclose(p, np.broadcast_to(prior / prior.sum(), p.shape), rtol=1e-9)


def test_split_and_join_restore_the_frame_and_cost_what_is_stated() -> None:
    """The header keeps 36 of person/1's 54 bits per record: on qpsk/ldpc_r12 36 symbols per record,
    plus the model's S symbols, against 54 for the whole record."""
    rng = np.random.default_rng(4)
    frame = frame_of(8, rng)
    header, indices = split_frame(frame, SCHEMA)
    assert record_header_bits(SCHEMA) == 36 and SCHEMA.record_bits == 54
    assert 8 * len(header) == header_frame_bits(8, SCHEMA) == 96 + 8 * 36 + 32
    assert join_frame(header, indices, SCHEMA) == frame
    model = load_model("person-s2", SCHEMA)
    learned = learned_burst_symbols(16, SCHEMA, model) - learned_burst_symbols(8, SCHEMA, model)
    digital = burst_symbols(frame_bits(16, SCHEMA), QPSK, 16) - burst_symbols(frame_bits(8, SCHEMA), QPSK, 16)
    assert (learned / 8, digital / 8) == (36 + 12, 54)
    with pytest.raises(CrcError):
        join_frame(header[:-1] + bytes([header[-1] ^ 1]), indices, SCHEMA)


@pytest.mark.parametrize("channel", ["awgn", "rayleigh"])
def test_burst_through_channel_sim(channel: str) -> None:
    """Seed 5: 8-record bursts through channel_sim's models at 25 dB Es/N0; on Rayleigh the bursts whose
    |h|^2 keeps the effective SNR above 15 dB. Every delivered frame decodes to the records sent."""
    model = load_model("person-s2", SCHEMA)
    registry = SchemaRegistry([SCHEMA])
    fading = [RayleighConfig()] if channel == "rayleigh" else []
    stream = ChannelChain([*fading, AwgnConfig(snr_db=25.0)], seed=5).for_stream("cam")
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(20):
        frame = frame_of(8, rng)
        tx = transmit_learned(frame, model, SCHEMA)
        out = stream.apply(ChannelBurst(tx.symbols, tx.symbols.size))
        gain = 1.0 if out.gains is None else abs(complex(out.gains[0])) ** 2
        if 25.0 + 10 * math.log10(gain) < 15.0:
            continue
        assert out.symbols is not None
        rx = receive_learned(
            out.symbols, model, SCHEMA, header_info_bits=tx.header_info_bits,
            header_coded_bits=tx.header_coded_bits, pilot_count=tx.pilot_symbols, record_count=8,
        )  # fmt: skip
        sent = decode_records(frame, registry, stream_id="cam")
        assert decode_records(rx.frame(), registry, stream_id="cam") == sent
        got = rx.records("cam")
        assert [r.fields for r in got] == [r.fields for r in sent]
        assert min(c for r in got for c in r.confidence.values()) > 0.9
        checked += 1
    assert checked >= 10


def test_lost_header_and_wrong_lengths_are_refused() -> None:
    model = load_model("person-s2", SCHEMA)
    rng = np.random.default_rng(6)
    tx = transmit_learned(frame_of(4, rng), model, SCHEMA)
    kwargs: dict[str, Any] = {
        "header_info_bits": tx.header_info_bits,
        "header_coded_bits": tx.header_coded_bits,
        "pilot_count": tx.pilot_symbols,
        "record_count": 4,
    }
    garbled = tx.symbols.copy()
    garbled[tx.pilot_symbols : tx.symbols.size - tx.learned_symbols] *= -1  # header data flipped
    with pytest.raises(CrcError):
        receive_learned(garbled, model, SCHEMA, **kwargs).frame()
    with pytest.raises(DecodeError, match="symbols"):
        receive_learned(tx.symbols[:-1], model, SCHEMA, **kwargs)
    with pytest.raises(DecodeError, match="header"):
        receive_learned(tx.symbols, model, SCHEMA, **{**kwargs, "record_count": 5})
    with pytest.raises(InvalidInput, match="decodes"):
        model.decode_fields(np.zeros((2, 5), np.complex64), noise_var=1.0)
    with pytest.raises(InvalidInput, match="pilots"):
        transmit_learned(frame_of(1, rng), model, SCHEMA, pilot_count=0)


def _broken(edit: str) -> dict[str, Any]:
    doc = copy.deepcopy(model_doc())
    field = doc["fields"][1]
    if edit == "untrained":
        doc["training"]["steps"] = 0
    elif edit == "shape":
        field["weight"] = field["weight"][:-1]
    elif edit == "values":
        field["values"] = field["values"][::-1]
    elif edit == "coinciding":
        field["codebook"] = [field["codebook"][0]] * len(field["codebook"])
    elif edit == "energy":
        field["codebook"][0][0] = [0.0, 0.0]
    elif edit == "fields":
        doc["fields"] = doc["fields"][:-1]
    return doc


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("untrained", "untrained"),
        ("shape", "weight has shape"),
        ("values", "differ from the schema"),
        ("coinciding", "coincide"),
        ("energy", "energy"),
        ("fields", "fields do not match"),
    ],
)
def test_broken_models_are_refused(edit: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        LearnedModel.from_dict(_broken(edit), SCHEMA)


def test_missing_and_mismatched_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no learned phy model 'person-s9'; shipped: person-s1"):
        load_model("learned/person-s9", SCHEMA)
    with pytest.raises(InvalidInput, match="cannot read"):
        load_model(tmp_path / "absent.json", SCHEMA)
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_model(bad, SCHEMA)
    with pytest.raises(InvalidInput, match="trained for schema 'person/1', not 'vehicle/1'"):
        load_model("person-s2", SchemaRegistry.builtin().get("vehicle/1"))
    with pytest.raises(InvalidInput, match="name the model"):
        learned_name("learned/")
    assert learned_name("qpsk/ldpc_r12") is None


def test_training_is_seeded_and_loads() -> None:
    """Two short runs with seed 3 give the same weights, and the result passes load checks."""
    from bench.learned_phy_train import train, training_prior

    args = argparse.Namespace(
        seed=3, steps=20, batch=64, lr=0.02, snr_db_min=0.0, snr_db_max=20.0, fading=0.5
    )
    prior = training_prior(SCHEMA, None, 0.5)
    first, losses = train(SCHEMA, [1] * 6, prior, args)
    second, _ = train(SCHEMA, [1] * 6, prior, args)
    assert first == second and len(losses) == 0
    doc = {**first, "format": "semcom-learned-phy/1", "name": "t", "schema_id": SCHEMA.id,
           "training": {"steps": 20}}  # fmt: skip
    assert LearnedModel.from_dict(doc, SCHEMA).symbols_per_record == 6


def test_digest_names_the_weights() -> None:
    one, two = load_model("person-s1", SCHEMA), load_model("person-s2", SCHEMA)
    assert len(one.digest) == 16 and one.digest != two.digest
    assert LearnedModel.from_dict(model_doc("person-s1"), SCHEMA).digest == one.digest
    one.check_digest(one.digest)
    with pytest.raises(InvalidInput, match="load the same model file"):
        one.check_digest(two.digest)


def test_bench_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/learned_phy.py end to end on 2 bursts per point: the cost rows hold the stated numbers."""
    from bench.learned_phy import main

    schemes = "digital:qpsk/ldpc_r12,learned:person-s2@qpsk/ldpc_r12"
    main(["--frames", "2", "--channels", "awgn", "--records", "uniform", "--schemes", schemes])
    out = capsys.readouterr().out
    extra = next(line for line in out.splitlines() if line.startswith("symbols/extra record"))
    assert extra.split()[-2:] == ["54.00", "48.00"]
    assert "30 dB" in out and "records exact %" in out
