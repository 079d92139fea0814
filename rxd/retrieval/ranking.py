"""One query's order of the descriptions, computed only as far as a search reads it."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from semcom.schema import Schema

from .engine import SlotTest
from .probability import SlotFactors, slot_factors

# Classes found by a scan of all descriptions each, before the rest are sorted at once.
_SCANNED_CLASSES = 4


def slot_counts(
    fields: NDArray[Any], tests: Sequence[SlotTest]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per description, how many slots match (its value is one the slot accepts, "unknown" included when
    asked for) and how many are unknown without matching."""
    matched = np.zeros(len(fields), dtype=np.int64)
    unknown = np.zeros(len(fields), dtype=np.int64)
    for t in tests:
        accepts = np.zeros(np.iinfo(fields.dtype).max + 1, dtype=np.bool_)
        accepts[list(t.values)] = True
        column = fields[:, t.column]
        hit = accepts[column]
        matched += hit
        unknown += (column == 0) & ~hit
    return matched, unknown


class DescriptionOrder:
    """The descriptions a query may return, in the order a search visits them: by the greatest probability
    any of their records can have (`bound`), then by the ranking policy's key (tier, matched slots, then
    similarity to the query: see engine.rank_descriptions), then by id. `group` numbers runs of equal
    (bound, key), which a search never splits.

    Equal to sorting every description by (bound, key), without doing it: descriptions fall into classes
    of equal (bound, tier, matched slots), taken best first; a class is sorted by similarity (and its
    embeddings read) only when a search reaches it. `position_key` orders any descriptions as their
    positions in the full order would, and `similarity` computes only the similarities asked for.
    """

    def __init__(
        self,
        schema: Schema,
        tests: Sequence[SlotTest],
        *,
        fields: NDArray[Any],
        usable: NDArray[np.bool_],
        counts: NDArray[np.int64],
        cmin: NDArray[np.float32],
        cmax: NDArray[np.float32],
        vectors: NDArray[np.float32],
        vector: NDArray[np.float32],
        min_probability: float,
    ) -> None:
        self._vectors = vectors
        self._vector = np.asarray(vector, dtype=np.float32)
        self.factors: SlotFactors = slot_factors(schema, tests, fields, counts, usable)
        self.bound = np.clip(self.factors.bound(cmin, cmax), 0.0, 1.0)
        self.counts = counts
        n = len(tests)
        matched, unknown = slot_counts(fields, tests)
        tier = np.where(matched == n, 0, np.where(matched + unknown == n, 1, 2))
        self._steps = tier * (n + 1) + (n - matched)  # the key's integer part: key = steps * 4 + (1 - sim)
        self.eligible = usable & (self.bound >= min_probability)
        self._sims = np.zeros(len(fields), dtype=np.float32)
        self._have_sims = np.zeros(len(fields), dtype=np.bool_)
        self._left = self.eligible.copy()  # eligible, not yet in a class handed out
        self._n_left = int(self._left.sum())
        self._picked = 0
        self._sorted: deque[NDArray[np.int64]] = deque()  # the remaining classes, once sorted
        self.order = np.zeros(0, dtype=np.int64)
        self.group = np.zeros(0, dtype=np.int64)
        self.cum = np.zeros(0, dtype=np.int64)

    @property
    def done(self) -> bool:
        """Whether every eligible description is in `order`."""
        return not self._n_left and not self._sorted

    def _next_class(self) -> NDArray[np.int64]:
        """The members of the next class of equal (bound, steps), in id order. The first few are found by
        a scan each (a search rarely reads more); then the rest are sorted once."""
        if not self._sorted and self._picked < _SCANNED_CLASSES:
            self._picked += 1
            left = np.flatnonzero(self._left)
            at = left[self.bound[left] == self.bound[left].max()]
            members: NDArray[np.int64] = at[self._steps[at] == self._steps[at].min()]
            self._left[members] = False
            self._n_left -= len(members)
            return members
        if not self._sorted:
            left = np.flatnonzero(self._left)
            left = left[np.lexsort((self._steps[left], -self.bound[left]))]  # stable: ids in order
            b, steps = self.bound[left], self._steps[left]
            cuts = np.flatnonzero((b[1:] != b[:-1]) | (steps[1:] != steps[:-1])) + 1
            self._sorted.extend(np.split(left, cuts))
            self._left[:] = False
            self._n_left = 0
        members = self._sorted.popleft()
        return members

    def similarity(self, descs: NDArray[np.int64]) -> NDArray[np.float32]:
        """The cosine similarity of each of `descs` to the query, computed once. einsum works row by row,
        so a subset's similarities have the same bits as the whole matrix's; einsum rather than BLAS, whose
        threads cost more to wake on a busy CPU than this product (a few thousand rows) takes."""
        need = np.unique(descs[~self._have_sims[descs]])
        if len(need) > len(self._sims) // 4:  # most of them: no copy of the rows
            self._sims = np.einsum("ij,j->i", self._vectors, self._vector)
            self._have_sims[:] = True
        elif len(need):
            self._sims[need] = np.einsum("ij,j->i", self._vectors[need], self._vector)
            self._have_sims[need] = True
        out: NDArray[np.float32] = self._sims[descs]
        return out

    def key(self, descs: NDArray[np.int64]) -> NDArray[np.float64]:
        """The ranking policy's key of `descs` (rank_descriptions sorts by it; equal keys share a rank)."""
        out: NDArray[np.float64] = self._steps[descs] * 4.0 + (
            1.0 - self.similarity(descs).astype(np.float64)
        )
        return out

    def position_key(self, descs: NDArray[np.int64]) -> tuple[NDArray[Any], ...]:
        """Keys for np.lexsort (least significant first) that order eligible `descs` as their positions
        in the visit order do."""
        return descs, self.key(descs), self._steps[descs], -self.bound[descs]

    def extend(self, records: int) -> None:
        """Add whole classes to `order` until it holds descriptions of at least `records` records, or all."""
        parts, groups = [self.order], [self.group]
        total = int(self.cum[-1]) if len(self.cum) else 0
        last = int(self.group[-1]) if len(self.group) else 0
        while not self.done and total < records:
            members = self._next_class()
            key = self.key(members)
            by_key = np.argsort(key, kind="stable")  # ties by id, as a stable sort of all would
            members, key = members[by_key], key[by_key]
            new = np.ones(len(members), dtype=np.bool_)
            new[1:] = key[1:] != key[:-1]
            group = last + np.cumsum(new)
            parts.append(members)
            groups.append(group)
            last = int(group[-1])
            total += int(self.counts[members].sum())
        if len(parts) > 1:
            tail = np.cumsum(self.counts[np.concatenate(parts[1:])]) + (self.cum[-1] if len(self.cum) else 0)
            self.order, self.group = np.concatenate(parts), np.concatenate(groups)
            self.cum = np.concatenate([self.cum, tail])

    def covers(self, pos: int) -> bool:
        """Whether `order` has an entry at `pos` (extending it as needed)."""
        while pos >= len(self.order) and not self.done:
            self.extend(int(self.cum[-1]) + 1 if len(self.cum) else 1)
        return pos < len(self.order)

    def chunk(self, pos: int, want: int) -> int:
        """The end of the next visit from `pos`: enough descriptions for `want` records in all (counted
        from the first), whole groups."""
        self.extend(want)
        end = min(int(np.searchsorted(self.cum, want)) + 1, len(self.order))
        return int(np.searchsorted(self.group, self.group[end - 1], side="right"))
