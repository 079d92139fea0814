"""The probability that a record satisfies every queried slot, from the confidences its transmitter carried.

Per slot S (a set of accepted values) and record field with sent value v and confidence c (the probability
that v is right), the rest of the belief (1 - c) is shared by the other known values in proportion to
their prior:
    v in S:      P = c + (1 - c) * prior(S - {v}) / (1 - prior(v))
    v not in S:  P = (1 - c) * prior(S) / (1 - prior(v))
    v unknown:   P = prior(S), or 1 when S holds "unknown" (a slot may ask for what was not seen)
and a record's probability is the product over its slots. A record whose transmitter stated no confidence
is taken at its word (c = 1): person/1 records rank as the exact/compatible/contradicted tiers did.
Priors are the index's own counts of each known value (add-one smoothed), over the records of the queried
schema: they describe the cameras searched, not PETA's. Every slot's P is affine in c, so per description
(fixed values) P(record) = prod(A + B * c), and the least and greatest c of its records bound it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from semcom.schema import Schema

from .engine import SlotTest


@dataclass(frozen=True)
class SlotFactors:
    """Per description (rows) and slot (columns): P = A + B * c, c the record's confidence in that field."""

    a: NDArray[np.float64]
    b: NDArray[np.float64]
    columns: tuple[int, ...]

    def bound(self, cmin: NDArray[np.float32], cmax: NDArray[np.float32]) -> NDArray[np.float64]:
        """Per description, the greatest probability any of its records can have (cmin/cmax: per
        description and schema column, the least and greatest effective confidence of its records)."""
        cols = list(self.columns)
        lo = self.a + self.b * cmin[:, cols]
        hi = self.a + self.b * cmax[:, cols]
        out: NDArray[np.float64] = np.prod(np.maximum(lo, hi), axis=1)
        return out

    def rows(self, descs: NDArray[np.int64], conf: NDArray[np.float32]) -> NDArray[np.float64]:
        """Per record (its description in `descs`, its confidences in `conf`: the queried schema columns
        only, NaN where none was stated), the probability of each slot (records x slots)."""
        stated = np.where(np.isnan(conf), np.float32(1.0), conf)
        out: NDArray[np.float64] = self.a[descs] + self.b[descs] * stated
        return np.clip(out, 0.0, 1.0)


def value_priors(values: NDArray[Any], counts: NDArray[np.int64], n_values: int) -> NDArray[np.float64]:
    """Prior of each value index of one field (index 0, unknown, gets 0): add-one smoothed counts of the
    known values among `values` (one per description) weighted by `counts` (its records)."""
    seen = np.bincount(values.astype(np.int64), weights=counts, minlength=n_values)[:n_values]
    seen[0] = 0.0
    smoothed = seen + 1.0
    smoothed[0] = 0.0
    out: NDArray[np.float64] = smoothed / smoothed.sum()
    return out


def slot_factors(
    schema: Schema,
    tests: Sequence[SlotTest],
    desc_fields: NDArray[Any],
    desc_counts: NDArray[np.int64],
    usable: NDArray[np.bool_],
) -> SlotFactors:
    """The affine factors of every description for the queried slots (priors from the usable ones)."""
    n = len(desc_fields)
    a = np.ones((n, len(tests)), dtype=np.float64)
    b = np.zeros((n, len(tests)), dtype=np.float64)
    for j, t in enumerate(tests):
        n_values = len(schema.fields[t.column].values)
        prior = value_priors(desc_fields[usable, t.column], desc_counts[usable], n_values)
        in_set = np.zeros(n_values, dtype=np.bool_)
        in_set[list(t.values)] = True
        p_set = float(prior[in_set].sum())
        # Per value index, then looked up per description: a few values, thousands of descriptions.
        v = np.arange(n_values)
        rest = np.maximum(1.0 - prior, 1e-12)
        matched = in_set & (v > 0)
        r_in = (p_set - prior) / rest
        r_out = p_set / rest
        # An unknown field satisfies a slot that asks for "unknown"; otherwise the slot's prior.
        unknown_a = 1.0 if in_set[0] else p_set
        a_of = np.where(v == 0, unknown_a, np.where(matched, r_in, r_out))
        b_of = np.where(v == 0, 0.0, np.where(matched, 1.0 - r_in, -r_out))
        column = np.minimum(desc_fields[:, t.column], n_values - 1)
        a[:, j] = a_of[column]
        b[:, j] = b_of[column]
    return SlotFactors(a, b, tuple(t.column for t in tests))


def effective(conf: NDArray[np.float32]) -> NDArray[np.float32]:
    """Confidences as ranked: one not stated (NaN) counts as certain."""
    out: NDArray[np.float32] = np.where(np.isnan(conf), np.float32(1.0), conf).astype(np.float32)
    return out
