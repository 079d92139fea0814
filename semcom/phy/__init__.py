"""Physical layer (channel adaptation): bytes -> LDPC -> Gray QAM -> IQ symbols with pilots, and back.

Units and conventions, used throughout this package:

- Constellations have unit average energy, Es = 1 per complex symbol.
- SNR means Es/N0 per complex symbol, in dB: snr_db = 10 log10(Es / N0).
- AWGN is complex Gaussian with variance N0 = 10^(-snr_db / 10) per complex symbol, N0 / 2 per real
  dimension: n = sqrt(N0 / 2) (g1 + j g2) with g1, g2 standard normal.
- The channel is y = h x + n with one complex gain h per burst (block fading); erased symbols are NaN.
- LLR = log P(b = 0 | y) / P(b = 1 | y): positive favours bit 0 (as commpy's demapper and decoder).
- Eb/N0 = Es/N0 - 10 log10(bits per symbol x code rate).
"""

from semcom.phy.chain import RxResult, TxBurst, burst_symbols, coded_bits_for, receive, transmit
from semcom.phy.ldpc import LdpcCode
from semcom.phy.mcs import MCS_TABLE, CodingName, Mcs, McsEntry, select_mcs
from semcom.phy.modem import BITS_PER_SYMBOL, ModulationName, demap_llr, hard_bits, modulate
from semcom.phy.pilots import ChannelEstimate, estimate_channel, pilot_symbols

__all__ = [
    "BITS_PER_SYMBOL",
    "MCS_TABLE",
    "ChannelEstimate",
    "CodingName",
    "LdpcCode",
    "Mcs",
    "McsEntry",
    "ModulationName",
    "RxResult",
    "TxBurst",
    "burst_symbols",
    "coded_bits_for",
    "demap_llr",
    "estimate_channel",
    "hard_bits",
    "modulate",
    "pilot_symbols",
    "receive",
    "select_mcs",
    "transmit",
]
