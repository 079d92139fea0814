"""Channel models: statistics against closed forms (seeded, tolerances stated), determinism, config errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pydantic import TypeAdapter

from channel_sim.models import KINDS, ChannelBurst, ChannelModelConfig, parse_model
from channel_sim.models.base import ChannelModel
from channel_sim.models.chain import ChannelChain, StreamChannel
from semcom.errors import InvalidInput

Complex = NDArray[np.complex64]


def chain(*items: dict[str, Any], seed: int = 1) -> ChannelChain:
    return ChannelChain.from_dicts(items, seed=seed)


def stream(*items: dict[str, Any], seed: int = 1, stream_id: str = "cam-1") -> StreamChannel:
    return chain(*items, seed=seed).for_stream(stream_id)


def burst(symbols: Complex, bits_per_symbol: int = 1) -> ChannelBurst:
    return ChannelBurst(symbols=symbols, payload_bits=bits_per_symbol * symbols.size)


def bpsk(n: int, seed: int) -> tuple[NDArray[np.bool_], Complex]:
    """Random bits and their BPSK symbols (+1 for 0, -1 for 1), read-only like a protobuf buffer view."""
    bits = np.random.default_rng(seed).random(n) < 0.5
    symbols = np.where(bits, -1.0, 1.0).astype(np.complex64)
    symbols.setflags(write=False)
    return bits, symbols


def q_function(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def assert_rate(errors: int, n: int, expected: float, sigmas: float = 4.0) -> None:
    """The measured rate is within `sigmas` binomial standard deviations of `expected`."""
    tolerance = sigmas * math.sqrt(expected * (1.0 - expected) / n)
    assert abs(errors / n - expected) <= tolerance, (errors / n, expected, tolerance)


def run_lengths(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Lengths of the runs of True in `mask`."""
    padded = np.concatenate(([0], mask.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return (edges[1::2] - edges[0::2]).astype(np.int64)


# --- AWGN --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 9.0, 20.0])
def test_awgn_noise_variance_is_n0_per_complex_symbol(snr_db: float) -> None:
    # 200k symbols: the variance estimate has a relative standard deviation of ~0.3 %; tolerance 2 %. Seed 1.
    _, x = bpsk(200_000, seed=11)
    y = stream({"kind": "awgn", "snr_db": snr_db}).apply(burst(x)).symbols
    assert y is not None and y.dtype == np.complex64
    noise = (y - x).astype(np.complex128)
    n0 = 10.0 ** (-snr_db / 10.0)
    assert np.mean(np.abs(noise) ** 2) == pytest.approx(n0, rel=0.02)
    assert np.var(noise.real) == pytest.approx(n0 / 2, rel=0.02)
    assert np.var(noise.imag) == pytest.approx(n0 / 2, rel=0.02)
    assert abs(np.mean(noise.real * noise.imag)) < 0.02 * n0  # I and Q uncorrelated


@pytest.mark.parametrize(("snr_db", "n"), [(0.0, 1_000_000), (4.0, 1_000_000), (8.0, 2_000_000)])
def test_bpsk_ber_over_awgn_matches_q_function(snr_db: float, n: int) -> None:
    # Errors are independent, so the count is binomial: tolerance 4 standard deviations. Seed 1.
    bits, x = bpsk(n, seed=12)
    y = stream({"kind": "awgn", "snr_db": snr_db}).apply(burst(x)).symbols
    assert y is not None
    errors = int(np.count_nonzero((y.real < 0) != bits))
    assert_rate(errors, n, q_function(math.sqrt(2.0 * 10.0 ** (snr_db / 10.0))))


# --- Fading ------------------------------------------------------------------------------------------------


def coherent_errors(y: Complex, gains: Complex, bits: NDArray[np.bool_]) -> int:
    """BPSK errors with perfect CSI: decide on the sign of Re(conj(h) y)."""
    return int(np.count_nonzero(((np.conj(gains) * y).real < 0) != bits))


@pytest.mark.parametrize("snr_db", [0.0, 5.0, 10.0, 15.0, 20.0])
def test_rayleigh_bpsk_ber_with_perfect_csi(snr_db: float) -> None:
    # One independent h per symbol (block_symbols=1), so errors are independent: 4 binomial sigmas. Seed 1.
    n = 1_000_000
    bits, x = bpsk(n, seed=13)
    out = stream({"kind": "rayleigh", "block_symbols": 1}, {"kind": "awgn", "snr_db": snr_db}).apply(burst(x))
    assert out.symbols is not None and out.gains is not None
    g = 10.0 ** (snr_db / 10.0)
    assert_rate(coherent_errors(out.symbols, out.gains, bits), n, 0.5 * (1.0 - math.sqrt(g / (1.0 + g))))


def test_rayleigh_gain_has_unit_power_and_circular_symmetry() -> None:
    # E|h|^2 over 500k draws: relative standard deviation ~0.14 %; tolerance 1 %. Seed 1.
    _, x = bpsk(500_000, seed=14)
    out = stream({"kind": "rayleigh", "block_symbols": 1}).apply(burst(x))
    assert out.gains is not None and out.symbols is not None
    h = out.gains.astype(np.complex128)
    assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, rel=0.01)
    assert abs(np.mean(h)) < 0.01
    # |h|^2 is exponential with mean 1: P(|h|^2 < 0.1) = 1 - exp(-0.1).
    assert np.mean(np.abs(h) ** 2 < 0.1) == pytest.approx(1.0 - math.exp(-0.1), abs=0.003)
    np.testing.assert_allclose(out.symbols, out.gains * x, rtol=1e-6)  # y = h x, no noise


@pytest.mark.parametrize("kind", ["rayleigh", "rician"])
def test_block_fading_holds_h_within_a_block(kind: str) -> None:
    extra = {"k_factor": 2.0} if kind == "rician" else {}
    x = np.ones(1000, dtype=np.complex64)
    out = stream({"kind": kind, "block_symbols": 64, **extra}).apply(burst(x))
    assert out.gains is not None
    blocks = [out.gains[i : i + 64] for i in range(0, 1000, 64)]  # the last block is 1000 - 15 * 64 = 40 long
    assert all(np.all(block == block[0]) for block in blocks)
    assert len({complex(block[0]) for block in blocks}) == len(blocks)  # independent draws differ
    whole = stream({"kind": kind, **extra}).apply(burst(x))  # block_symbols=0: one h per burst
    assert whole.gains is not None and np.all(whole.gains == whole.gains[0])


def test_rician_power_and_k_factor() -> None:
    # K = 4 over 400k independent draws (seed 1); tolerances: E|h|^2 1 %, K estimates 3 %.
    k = 4.0
    out = stream({"kind": "rician", "k_factor": k, "block_symbols": 1}).apply(
        burst(np.ones(400_000, dtype=np.complex64))
    )
    assert out.gains is not None
    h = out.gains.astype(np.complex128)
    power = np.abs(h) ** 2
    assert np.mean(power) == pytest.approx(1.0, rel=0.01)
    los = np.mean(h)
    assert abs(los) ** 2 / np.mean(np.abs(h - los) ** 2) == pytest.approx(k, rel=0.03)
    # Phase-blind moment estimator: gamma = Var|h|^2 / (E|h|^2)^2, K = r / (1 - r) with r = sqrt(1 - gamma).
    root = math.sqrt(1.0 - np.var(power) / np.mean(power) ** 2)
    assert root / (1.0 - root) == pytest.approx(k, rel=0.03)


def test_rician_with_large_k_approaches_awgn_and_k0_is_rayleigh() -> None:
    # 1M symbols at 4 dB (seed 1): K = 1e4 is within 5 % of the AWGN BER; K = 0 within 4 sigmas of Rayleigh.
    n, snr_db = 1_000_000, 4.0
    g = 10.0 ** (snr_db / 10.0)
    bits, x = bpsk(n, seed=15)
    noise = {"kind": "awgn", "snr_db": snr_db}
    out = stream({"kind": "rician", "k_factor": 1e4, "block_symbols": 1}, noise).apply(burst(x))
    assert out.symbols is not None and out.gains is not None
    awgn_ber = q_function(math.sqrt(2.0 * g))
    assert coherent_errors(out.symbols, out.gains, bits) / n == pytest.approx(awgn_ber, rel=0.05)
    out = stream({"kind": "rician", "k_factor": 0.0, "block_symbols": 1}, noise).apply(burst(x))
    assert out.symbols is not None and out.gains is not None
    assert_rate(coherent_errors(out.symbols, out.gains, bits), n, 0.5 * (1.0 - math.sqrt(g / (1.0 + g))))


def test_chained_fading_gains_compose() -> None:
    x = np.exp(1j * np.linspace(0, 6, 300)).astype(np.complex64)
    out = stream({"kind": "rayleigh", "block_symbols": 10}, {"kind": "rician", "k_factor": 1.0}).apply(
        burst(x)
    )
    assert out.symbols is not None and out.gains is not None
    np.testing.assert_allclose(out.symbols, out.gains * x, rtol=1e-5)


# --- Loss --------------------------------------------------------------------------------------------------


def test_symbol_erasure_rate_and_marking() -> None:
    # p = 0.1 over 200k symbols (seed 1): standard deviation 0.00067; tolerance 4 sigmas.
    n = 200_000
    _, x = bpsk(n, seed=16)
    out = stream({"kind": "erasure", "p": 0.1}).apply(burst(x))
    assert out.symbols is not None and not out.dropped
    lost = np.isnan(out.symbols.real)
    assert np.array_equal(lost, np.isnan(out.symbols.imag))
    assert out.erased == int(np.count_nonzero(lost))
    assert_rate(out.erased, n, 0.1)
    assert np.array_equal(out.symbols[~lost], x[~lost])  # the others pass untouched


def test_burst_erasure_rate_applies_to_bytes_too() -> None:
    # p = 0.3 over 10k bursts (seed 1): tolerance 4 binomial sigmas (0.018).
    channel = stream({"kind": "erasure", "p": 0.3, "unit": "burst"})
    drops = sum(channel.apply(ChannelBurst(symbols=None, payload_bits=800)).dropped for _ in range(10_000))
    assert_rate(drops, 10_000, 0.3)


def test_erasures_are_not_counted_twice() -> None:
    out = stream({"kind": "erasure", "p": 0.5}, {"kind": "erasure", "p": 0.5}).apply(
        burst(np.ones(10_000, dtype=np.complex64))
    )
    assert out.symbols is not None
    assert out.erased == int(np.count_nonzero(np.isnan(out.symbols.real)))


def ge_mask(channel: StreamChannel, bursts: int, size: int) -> NDArray[np.bool_]:
    """Erasure masks of `bursts` consecutive bursts of `size` symbols, concatenated."""
    x = np.ones(size, dtype=np.complex64)
    masks = []
    for _ in range(bursts):
        out = channel.apply(burst(x))
        assert out.symbols is not None
        masks.append(np.isnan(out.symbols.real))
    return np.concatenate(masks)


def test_gilbert_elliott_long_run_loss_and_runs() -> None:
    # 400 bursts x 1000 symbols (seed 1). Losses are correlated, so the tolerance is wider than binomial: 8 %
    # relative, ~4 standard deviations of the estimate (measured over seeds 1..20).
    params = {"p_good_to_bad": 0.01, "p_bad_to_good": 0.1, "loss_good": 0.001, "loss_bad": 0.5}
    config = parse_model("gilbert_elliott", params)
    expected = (0.01 / 0.11) * 0.5 + (0.1 / 0.11) * 0.001
    assert config.loss_rate == pytest.approx(expected)  # type: ignore[union-attr]
    mask = ge_mask(stream({"kind": "gilbert_elliott", **params}), bursts=400, size=1000)
    rate = float(np.mean(mask))
    assert rate == pytest.approx(expected, rel=0.08)
    # Independent loss at the same rate has mean run 1 / (1 - rate) ~ 1.05; in the bad state runs last
    # ~1 / (1 - 0.9 * 0.5) ~ 1.8.
    assert np.mean(run_lengths(mask)) > 1.4 * (1.0 / (1.0 - rate))


def test_gilbert_state_carries_across_bursts() -> None:
    # Classic Gilbert (loss only in the bad state): loss runs are bad-state sojourns, mean 1 / p_bad_to_good
    # = 10 symbols, though each burst holds 5. 20k bursts (seed 1); tolerance 8 %, ~4 sigmas over seeds 1..20.
    channel = stream({"kind": "gilbert_elliott", "p_good_to_bad": 0.02, "p_bad_to_good": 0.1})
    mask = ge_mask(channel, bursts=20_000, size=5)
    assert np.mean(run_lengths(mask)) == pytest.approx(10.0, rel=0.08)
    assert np.mean(mask) == pytest.approx(0.02 / 0.12, rel=0.08)


def test_gilbert_per_burst_drops_in_runs() -> None:
    # Per-burst unit, 40k bursts (seed 1): loss rate 0.05 / 0.3 = 1/6 within 8 % and mean run 1 / 0.25 = 4
    # within 10 %, both ~4 standard deviations (measured over seeds 1..20).
    channel = stream(
        {"kind": "gilbert_elliott", "p_good_to_bad": 0.05, "p_bad_to_good": 0.25, "unit": "burst"}
    )
    drops = np.array([channel.apply(ChannelBurst(None, 8)).dropped for _ in range(40_000)])
    assert np.mean(drops) == pytest.approx(1 / 6, rel=0.08)
    assert np.mean(run_lengths(drops)) == pytest.approx(4.0, rel=0.10)


def test_gilbert_edge_probabilities() -> None:
    x = np.ones(1000, dtype=np.complex64)
    never = stream({"kind": "gilbert_elliott", "p_good_to_bad": 0.0, "p_bad_to_good": 0.0}).apply(burst(x))
    assert never.erased == 0  # both 0: stays in the good state forever
    always = stream({"kind": "gilbert_elliott", "p_good_to_bad": 1.0, "p_bad_to_good": 0.0}).apply(burst(x))
    assert always.erased >= 999  # at most the first symbol in the good state
    flip = stream({"kind": "gilbert_elliott", "p_good_to_bad": 1.0, "p_bad_to_good": 1.0}).apply(burst(x))
    assert flip.symbols is not None
    lost = np.isnan(flip.symbols.real)
    assert flip.erased == 500 and np.all(lost[1:] != lost[:-1])  # strict alternation


# --- Timing ------------------------------------------------------------------------------------------------


def test_rate_limit_airtime_is_exact_and_accumulates() -> None:
    channel = stream({"kind": "rate_limit", "bps": 1e6})
    out = channel.apply(ChannelBurst(symbols=None, payload_bits=219_000_000))
    assert out.airtime_s == 219.0
    out = channel.apply(ChannelBurst(symbols=None, payload_bits=500, airtime_s=1.5))
    assert out.airtime_s == 1.5 + 500 / 1e6


def test_delay_adds_fixed_and_half_normal_jitter() -> None:
    fixed = stream({"kind": "delay", "delay_s": 0.05}).apply(ChannelBurst(None, 8, delay_s=0.01))
    assert fixed.delay_s == pytest.approx(0.06, abs=1e-15)
    # 20k bursts (seed 1): the mean added jitter 0.005 * sqrt(2 / pi) within 3 % (~5 sigmas); never early.
    channel = stream({"kind": "delay", "delay_s": 0.01, "jitter_s": 0.005})
    delays = np.array([channel.apply(ChannelBurst(None, 8)).delay_s for _ in range(20_000)])
    assert np.all(delays >= 0.01)
    assert np.mean(delays) - 0.01 == pytest.approx(0.005 * math.sqrt(2 / math.pi), rel=0.03)


# --- Byte payloads, drops, chains --------------------------------------------------------------------------

SYMBOL_MODELS: list[dict[str, Any]] = [
    {"kind": "awgn", "snr_db": 0.0},
    {"kind": "rayleigh"},
    {"kind": "rician", "k_factor": 3.0, "block_symbols": 4},
    {"kind": "erasure", "p": 0.9},
    {"kind": "gilbert_elliott", "p_good_to_bad": 0.5, "p_bad_to_good": 0.1},
]


@pytest.mark.parametrize("item", SYMBOL_MODELS, ids=lambda item: item["kind"])
def test_symbol_models_pass_byte_payloads_unchanged(item: dict[str, Any]) -> None:
    original = ChannelBurst(symbols=None, payload_bits=8 * 120, airtime_s=0.5, delay_s=0.25)
    assert stream(item).apply(original) == ChannelBurst(None, 8 * 120, 0.5, 0.25)


def test_burst_level_models_apply_to_byte_payloads() -> None:
    out = stream(
        {"kind": "awgn", "snr_db": 3.0},
        {"kind": "rate_limit", "bps": 1000.0},
        {"kind": "delay", "delay_s": 0.2},
        {"kind": "erasure", "p": 1.0, "unit": "burst"},
    ).apply(ChannelBurst(symbols=None, payload_bits=2000))
    assert (out.symbols, out.airtime_s, out.delay_s, out.dropped) == (None, 2.0, 0.2, True)


def test_dropped_burst_symbols_are_left_alone_but_time_still_counts() -> None:
    _, x = bpsk(100, seed=17)
    out = stream(
        {"kind": "erasure", "p": 1.0, "unit": "burst"},
        {"kind": "rayleigh"},
        {"kind": "awgn", "snr_db": 0.0},
        {"kind": "erasure", "p": 1.0},
        {"kind": "rate_limit", "bps": 100.0},
    ).apply(burst(x))
    assert out.dropped and out.symbols is x and out.gains is None and out.erased == 0
    assert out.airtime_s == 1.0


def test_models_never_write_into_the_input() -> None:
    _, x = bpsk(1000, seed=18)  # read-only, like np.frombuffer over a protobuf payload
    items = [*SYMBOL_MODELS, {"kind": "delay", "delay_s": 1.0}, {"kind": "rate_limit", "bps": 1.0}]
    original = burst(x)
    out = stream(*items).apply(original)
    assert out is not original and original == burst(x) and np.array_equal(x, bpsk(1000, seed=18)[1])


def impaired(seed: int, stream_id: str, bursts: int = 3) -> list[ChannelBurst]:
    channel = stream(
        {"kind": "rician", "k_factor": 2.0, "block_symbols": 16},
        {"kind": "awgn", "snr_db": 5.0},
        {"kind": "gilbert_elliott", "p_good_to_bad": 0.05, "p_bad_to_good": 0.3},
        {"kind": "delay", "delay_s": 0.01, "jitter_s": 0.01},
        seed=seed,
        stream_id=stream_id,
    )
    _, x = bpsk(256, seed=19)
    return [channel.apply(burst(x)) for _ in range(bursts)]


def same(a: list[ChannelBurst], b: list[ChannelBurst]) -> bool:
    """Bursts with equal symbols (NaN = NaN), gains, delays and erasure counts."""

    def arrays(x: ChannelBurst) -> tuple[Complex, Complex]:
        assert x.symbols is not None and x.gains is not None
        return x.symbols, x.gains

    return all(
        np.array_equal(arrays(p)[0], arrays(q)[0], equal_nan=True)
        and np.array_equal(arrays(p)[1], arrays(q)[1])
        and (p.delay_s, p.erased) == (q.delay_s, q.erased)
        for p, q in zip(a, b, strict=True)
    )


def test_same_seed_and_stream_give_identical_impairments() -> None:
    assert same(impaired(7, "cam-1"), impaired(7, "cam-1"))
    assert not same(impaired(7, "cam-1"), impaired(7, "cam-2"))
    assert not same(impaired(7, "cam-1"), impaired(8, "cam-1"))
    first = impaired(7, "cam-1")
    assert not same(first[:1], first[1:2])  # successive bursts of a stream differ


def test_impairments_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "from channel_sim.models.chain import ChannelChain\n"
        "from channel_sim.models import ChannelBurst\n"
        "import numpy as np\n"
        "c = ChannelChain.from_dicts([{'kind': 'rayleigh'}, {'kind': 'awgn', 'snr_db': 3}], seed=5)\n"
        "out = c.for_stream('cam-1').apply(ChannelBurst(np.ones(4, np.complex64), 4))\n"
        "print(out.symbols.tobytes().hex())\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    here = stream({"kind": "rayleigh"}, {"kind": "awgn", "snr_db": 3}, seed=5)
    symbols = here.apply(ChannelBurst(np.ones(4, np.complex64), 4)).symbols
    assert symbols is not None and outputs == {symbols.tobytes().hex() + "\n"}


def test_changing_one_model_leaves_the_others_draws_alone() -> None:
    x = np.ones(64, dtype=np.complex64)
    low, high = (
        stream({"kind": "rayleigh", "block_symbols": 8}, {"kind": "awgn", "snr_db": snr}).apply(burst(x))
        for snr in (0.0, 20.0)
    )
    assert low.gains is not None and high.gains is not None
    assert np.array_equal(low.gains, high.gains)


def test_chain_describe_and_dict_round_trip() -> None:
    items = [
        {"kind": "rayleigh", "block_symbols": 0},
        {"kind": "awgn", "snr_db": 9},
        {"kind": "erasure", "p": 0.01, "unit": "burst"},
        {"kind": "gilbert_elliott", "p_good_to_bad": 0.1, "p_bad_to_good": 0.5},
        {"kind": "delay", "delay_s": 0.02, "jitter_s": 0.001},
        {"kind": "rate_limit", "bps": 1e6},
        {"kind": "rician", "k_factor": 10.0, "block_symbols": 128},
    ]
    original = ChannelChain.from_dicts(items, seed=3)
    assert original.describe().startswith(
        "rayleigh(block_symbols=0)|awgn(snr_db=9.0)|erasure(p=0.01, unit='burst')"
    )
    assert ChannelChain([], seed=0).describe() == "passthrough"
    assert chain().for_stream("x").describe() == "passthrough"
    again = ChannelChain.from_dicts(original.to_dicts(), seed=original.seed)
    assert again.configs == original.configs and again.describe() == original.describe()
    assert original.for_stream("s").describe() == original.describe()
    assert {d["kind"] for d in original.to_dicts()} == set(KINDS)
    # The discriminated union reads the same dicts (as a TOML config section would).
    adapter: TypeAdapter[ChannelModelConfig] = TypeAdapter(ChannelModelConfig)
    assert tuple(adapter.validate_python(d) for d in original.to_dicts()) == original.configs


def test_empty_chain_passes_bursts_through() -> None:
    original = burst(np.ones(8, dtype=np.complex64))
    assert chain().for_stream("x").apply(original) is original


# --- Config errors -----------------------------------------------------------------------------------------


def test_parse_model_accepts_negative_snr_and_lax_numbers() -> None:
    assert parse_model("awgn", {"snr_db": -3}).describe() == "awgn(snr_db=-3.0)"
    assert parse_model("awgn", {"kind": "awgn", "snr_db": "4.5"}).describe() == "awgn(snr_db=4.5)"


@pytest.mark.parametrize(
    ("kind", "params", "needles"),
    [
        ("fm_radio", {}, ["unknown channel model kind 'fm_radio'", ", ".join(KINDS)]),
        ("awgn", {}, ["snr_db: Field required"]),
        ("awgn", {"snr_db": 9, "snr": 9}, ["snr: Extra inputs are not permitted", "options: snr_db"]),
        ("awgn", {"snr_db": float("nan")}, ["snr_db: Input should be a finite number"]),
        ("erasure", {"p": 1.5}, ["p: Input should be less than or equal to 1"]),
        ("erasure", {"p": -0.1}, ["p: Input should be greater than or equal to 0"]),
        ("erasure", {"p": 0.1, "unit": "packet"}, ["unit: Input should be 'symbol' or 'burst'"]),
        ("gilbert_elliott", {"p_good_to_bad": 2, "p_bad_to_good": 0.1}, ["p_good_to_bad: Input should be"]),
        (
            "gilbert_elliott",
            {"p_good_to_bad": 0.1, "p_bad_to_good": 0.1, "loss_good": 0.5, "loss_bad": 0.1},
            ["loss_bad (0.1) must be at least loss_good (0.5)"],
        ),
        ("rayleigh", {"block_symbols": 2.5}, ["block_symbols: Input should be a valid integer"]),
        ("rician", {"k_db": 3}, ["k_factor: Field required", "k_db: Extra inputs"]),
        ("rate_limit", {"bps": 0}, ["bps: Input should be greater than 0"]),
        ("delay", {"delay_s": -1}, ["delay_s: Input should be greater than or equal to 0"]),
        ("awgn", {"kind": "rayleigh"}, ["params say kind 'rayleigh' but the model is 'awgn'"]),
    ],
)
def test_parse_model_errors_are_clear(kind: str, params: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_model(kind, params)
    for needle in needles:
        assert needle in str(info.value)


def test_from_dicts_errors_name_the_item() -> None:
    with pytest.raises(InvalidInput, match=r"models\[1\]\.snr_db: Input should be a valid number"):
        ChannelChain.from_dicts([{"kind": "rayleigh"}, {"kind": "awgn", "snr_db": "loud"}], seed=0)
    with pytest.raises(InvalidInput, match=r"models\[0\]\.kind: missing"):
        ChannelChain.from_dicts([{"snr_db": 3}], seed=0)
    with pytest.raises(InvalidInput, match=r"models\[0\]: unknown channel model kind 'bogus'"):
        ChannelChain.from_dicts([{"kind": "bogus"}], seed=0)
    with pytest.raises(InvalidInput, match="seed"):
        ChannelChain([], seed=-1)
    with pytest.raises(InvalidInput, match=r"models\[0\]: expected a channel model config, got dict"):
        ChannelChain([{"kind": "awgn", "snr_db": 1.0}], seed=0)  # type: ignore[list-item]


# --- Properties --------------------------------------------------------------------------------------------

model_items = st.one_of(
    st.builds(lambda s: {"kind": "awgn", "snr_db": s}, st.floats(-20, 40)),
    st.builds(lambda b: {"kind": "rayleigh", "block_symbols": b}, st.integers(0, 50)),
    st.builds(
        lambda k, b: {"kind": "rician", "k_factor": k, "block_symbols": b},
        st.floats(0, 1e3),
        st.integers(0, 9),
    ),
    st.builds(
        lambda p, u: {"kind": "erasure", "p": p, "unit": u},
        st.floats(0, 1),
        st.sampled_from(["symbol", "burst"]),
    ),
    st.builds(
        lambda a, b: {"kind": "gilbert_elliott", "p_good_to_bad": a, "p_bad_to_good": b},
        st.floats(0, 1),
        st.floats(0, 1),
    ),
    st.builds(lambda d: {"kind": "delay", "delay_s": d}, st.floats(0, 10)),
    st.builds(lambda r: {"kind": "rate_limit", "bps": r}, st.floats(1, 1e9)),
)


@settings(max_examples=60, deadline=None)
@given(items=st.lists(model_items, max_size=5), n=st.integers(0, 300), seed=st.integers(0, 2**64 - 1))
def test_any_chain_keeps_shape_dtype_and_erasure_count(
    items: list[dict[str, Any]], n: int, seed: int
) -> None:
    x = np.ones(n, dtype=np.complex64)
    x.setflags(write=False)
    out = stream(*items, seed=seed).apply(burst(x, bits_per_symbol=2))
    assert out.symbols is not None and out.payload_bits == 2 * n
    if not out.dropped:
        assert out.symbols.shape == (n,) and out.symbols.dtype == np.complex64
        assert out.erased == int(np.count_nonzero(np.isnan(out.symbols.real)))
    assert out.airtime_s >= 0.0 and out.delay_s >= 0.0


@pytest.mark.asyncio
async def test_a_stream_closes_its_models_in_chain_order() -> None:
    closed: list[str] = []

    class Traced(ChannelModel):
        def __init__(self, name: str) -> None:
            self.name = name

        def apply(self, burst: ChannelBurst, rng: np.random.Generator) -> ChannelBurst:
            return burst

        def describe(self) -> str:
            return self.name

        async def aclose(self) -> None:
            closed.append(self.name)

    pure = parse_model("awgn", {"snr_db": 9.0}).build()
    await StreamChannel("s", [Traced("first"), pure, Traced("last")], seed=1).aclose()
    assert closed == ["first", "last"]  # the built-in model has nothing to close and is passed over
