"""Phy benchmark: LDPC + 16-QAM throughput on one core against commpy 1.2.0, BLER, MCS thresholds."""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import numba
import numpy as np
from numpy.typing import NDArray

from semcom.phy import MCS_TABLE, LdpcCode, Mcs, demap_llr, modulate, receive, transmit


def _awgn(symbols: NDArray[np.complex64], snr_db: float, rng: np.random.Generator) -> NDArray[np.complex64]:
    n0 = 10 ** (-snr_db / 10)
    noise = rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)
    return (symbols + math.sqrt(n0 / 2) * noise).astype(np.complex64)


# Throughput is measured against this process's CPU time by default: the process runs on one pinned core
# with one thread, so CPU seconds are core seconds, and the figures do not drop when other jobs share the
# machine. --clock wall measures elapsed time instead.
_CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def _rate(work: Callable[[], int], seconds: float, clock: Callable[[], float]) -> float:
    """Information bits per second of `work` (which returns the bits it handled), run for ~`seconds`."""
    work()  # warm-up (JIT, caches)
    done, start = 0, clock()
    while (elapsed := clock() - start) < seconds:
        done += work()
    return done / elapsed


def _chain_rates(
    size: int, snr_db: float, seconds: float, rng: np.random.Generator, clock: Callable[[], float]
) -> tuple[float, float]:
    """Info bit/s of transmit() and of receive() (counting only frames received intact) for one frame size."""
    mcs = Mcs("qam16", "ldpc_r12")
    frame = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    tx = transmit(frame, mcs)
    y = _awgn(tx.symbols, snr_db, rng)

    def send() -> int:
        return transmit(frame, mcs).info_bits

    def take() -> int:
        rx = receive(y, mcs, info_bits=tx.info_bits, coded_bits=tx.coded_bits, pilot_count=tx.pilot_symbols)
        return tx.info_bits if rx.frame == frame else 0

    return _rate(send, seconds, clock), _rate(take, seconds, clock)


def throughput(seconds: float, snr_db: float, max_iter: int, clock: Callable[[], float]) -> None:
    import commpy

    code = LdpcCode.wimax_r12(60)
    rng = np.random.default_rng(0)
    batch = 256
    info = rng.integers(0, 2, (batch, code.k), dtype=np.uint8)
    n0 = 10 ** (-snr_db / 10)
    received = _awgn(modulate(code.encode(info).reshape(-1), "qam16"), snr_db, rng)
    ours, _, iters = code.decode_detailed(demap_llr(received, "qam16", n0).reshape(batch, code.n), max_iter)

    def encode() -> int:
        modulate(code.encode(info).reshape(-1), "qam16")
        return info.size

    def decode() -> int:
        code.decode(demap_llr(received, "qam16", n0).reshape(batch, code.n), max_iter)
        return info.size

    ref_code = commpy.LDPCCode.from_base_graph(code.base, 60)
    ref_mod = commpy.MQAMModulator(16)
    per_word = received.reshape(batch, -1).astype(np.complex128)
    tally = {"done": 0, "agree": 0}

    def reference() -> int:
        i = tally["done"] % batch
        word = ref_code.decode(ref_mod.soft_demodulate(per_word[i], n0), max_iter=max_iter)[1]
        tally["done"] += 1
        tally["agree"] += int(np.array_equal(word, ours[i]))
        return code.k

    enc, dec = _rate(encode, seconds, clock), _rate(decode, seconds, clock)
    small_tx, small_rx = _chain_rates(code.k // 8, snr_db, seconds, rng, clock)  # one n=1440 codeword
    big_tx, big_rx = _chain_rates(2000, snr_db, seconds, rng, clock)  # 14 codewords of the n=2304 code
    ref = _rate(reference, seconds, clock)
    bler = float(np.mean(np.any(ours[:, : code.k] != info, axis=1)))
    print(f"LDPC n={code.n} k={code.k} rate 1/2 + 16-QAM, AWGN Es/N0 {snr_db} dB, <= {max_iter} iterations")
    print(f"one core; figures are information Mbit/s per {clock.__name__} second")
    print(f"  encode (LDPC encode + 16-QAM map), batches of {batch}: {enc / 1e6:8.2f}")
    print(f"  decode (max-log demap + layered min-sum), batches:   {dec / 1e6:8.2f}", end="")
    print(f"  (mean iterations {iters.mean():.2f}, BLER {bler:.4f})")
    print(f"  chain transmit,   90-byte frames (1 codeword, n=1440): {small_tx / 1e6:8.2f}")
    print(f"  chain receive,    90-byte frames:                      {small_rx / 1e6:8.2f}")
    print(f"  chain transmit, 2000-byte frames (14 codewords, n=2304): {big_tx / 1e6:6.2f}")
    print(f"  chain receive,  2000-byte frames:                      {big_rx / 1e6:8.2f}")
    print(f"  commpy 1.2.0 soft_demodulate + LDPCCode.decode (sum-product): {ref / 1e6:.4f}", end="")
    print(f"  (same codewords as ours: {tally['agree']}/{tally['done']})")
    print(f"  ratio to commpy: decode {dec / ref:.0f}x, chain receive (90 B) {small_rx / ref:.0f}x")


def bler_sweep(snrs: list[float], blocks: int, max_iter: int, seed: int) -> None:
    code = LdpcCode.wimax_r12(60)
    print(
        f"BLER, LDPC n={code.n} rate 1/2 + 16-QAM, AWGN, max-log LLRs, <= {max_iter} iterations, "
        f"{blocks} blocks per point, seed {seed}"
    )
    for snr_db in snrs:
        rng = np.random.default_rng(seed)
        errors = 0
        for start in range(0, blocks, 500):
            count = min(500, blocks - start)
            info = rng.integers(0, 2, (count, code.k), dtype=np.uint8)
            received = _awgn(modulate(code.encode(info).reshape(-1), "qam16"), snr_db, rng)
            llr = demap_llr(received, "qam16", 10 ** (-snr_db / 10)).reshape(count, code.n)
            decoded, _ = code.decode(llr, max_iter)
            errors += int(np.count_nonzero(np.any(decoded != info, axis=1)))
        print(f"  {snr_db:5.1f} dB: BLER {errors / blocks:.2e} ({errors}/{blocks})")


def frame_error_rate(mcs: Mcs, size: int, snr_db: float, frames: int, max_errors: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    errors = 0
    for done in range(1, frames + 1):
        frame = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        tx = transmit(frame, mcs)
        y = _awgn(tx.symbols * np.exp(2j * np.pi * rng.random()), snr_db, rng)
        rx = receive(y, mcs, info_bits=tx.info_bits, coded_bits=tx.coded_bits, pilot_count=tx.pilot_symbols)
        errors += rx.frame != frame
        if errors > max_errors:
            return errors / done
    return errors / frames


def mcs_thresholds(sizes: list[int], frames: int, seed: int) -> None:
    print(
        f"MCS thresholds: lowest Es/N0 (0.25 dB grid) with frame error rate < 1e-2 over {frames} frames, "
        f"real chain (16 pilots, random phase, 20 iterations), frame sizes {sizes} bytes, seed {seed}"
    )
    for entry in MCS_TABLE:
        found: list[float] = []
        for size in sizes:
            snr_db = entry.min_snr_db - 4.0
            while frame_error_rate(entry.mcs, size, snr_db, frames, int(frames * 0.01), seed) >= 1e-2:
                snr_db += 0.25
            found.append(snr_db)
        measured = ", ".join(f"{s} B: {v:.2f} dB" for s, v in zip(sizes, found, strict=True))
        print(f"  {entry.index} {entry.mcs!s:15} table {entry.min_snr_db:5.1f} dB  measured {measured}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.phy_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per throughput measurement (s)")
    parser.add_argument("--clock", choices=sorted(_CLOCKS), default="cpu", help="time base for throughput")
    parser.add_argument("--snr-db", type=float, default=9.0, help="Es/N0 of the throughput run (dB)")
    parser.add_argument("--max-iter", type=int, default=20, help="decoder iteration limit")
    parser.add_argument("--bler", action="store_true", help="also sweep BLER of the n=1440 code at 6..9 dB")
    parser.add_argument("--blocks", type=int, default=20000, help="codewords per BLER point")
    parser.add_argument("--mcs-table", action="store_true", help="measure each MCS_TABLE entry's threshold")
    parser.add_argument("--frames", type=int, default=2000, help="frames per SNR point for --mcs-table")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    # One core: pin the process and keep numba to one thread, so figures compare across machines.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    numba.set_num_threads(1)
    throughput(args.seconds, args.snr_db, args.max_iter, _CLOCKS[args.clock])
    if args.bler:
        bler_sweep([6.0, 7.0, 8.0, 9.0], args.blocks, args.max_iter, args.seed)
    if args.mcs_table:
        mcs_thresholds([32, 250], args.frames, args.seed)


if __name__ == "__main__":
    main()
