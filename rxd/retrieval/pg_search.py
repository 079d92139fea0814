"""Search on the PostgreSQL index: descriptions ranked in memory, the best records fetched per description."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from psycopg import sql

from .engine import Query
from .ranking import DescriptionOrder

# A query for one stream reads all its records that pass the filters when they are at most this many.
STREAM_FIRST_MAX = 20_000
_COLUMNS = "r.desc_id, r.stream_id, r.record_id, r.track_id, r.time_s, r.location_id, r.conf"
# One row per record fetched: desc_id, stream_id, record_id, track_id, time_s, location_id, conf.
FetchedRow = tuple[int, str, int, int, float, int, list[float | None] | None]
Fetch = Callable[[sql.Composed, dict[str, Any]], list[FetchedRow]]


@dataclass(frozen=True)
class Ranked:
    """What the replica computed per description for one query (arrays indexed by description id)."""

    order: DescriptionOrder  # descriptions to visit, best first, with their bounds and slot factors
    cmin: NDArray[np.float32]  # per description and schema column: the least confidence of its records
    cmax: NDArray[np.float32]  # ... and the greatest
    width: int

    def uniform(self, descs: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Whether all records of each of `descs` have one probability (then order by recency is exact):
        no queried column's confidence varies among them."""
        factors = self.order.factors
        cols = list(factors.columns)
        same = self.cmin[descs][:, cols] == self.cmax[descs][:, cols]
        out: NDArray[np.bool_] = np.all((factors.b[descs] == 0) | same, axis=1)
        return out


def _filters(q: Query) -> tuple[list[sql.Composable], dict[str, Any]]:
    where: list[sql.Composable] = [sql.SQL("TRUE")]
    params: dict[str, Any] = {}
    if q.stream_id:
        where.append(sql.SQL("r.stream_id = %(stream)s"))
        params["stream"] = q.stream_id
    if q.location_ids:
        where.append(sql.SQL("r.location_id = ANY(%(locs)s)"))
        params["locs"] = list(q.location_ids)
    if q.t0_s:
        where.append(sql.SQL("r.time_s >= %(t0)s"))
        params["t0"] = q.t0_s
    if q.t1_s:
        where.append(sql.SQL("r.time_s <= %(t1)s"))
        params["t1"] = q.t1_s
    return where, params


def _statement(
    q: Query, ranked: Ranked, descs: NDArray[np.int64], *, uniform: bool
) -> tuple[sql.Composed, dict[str, Any]]:
    """The q.top_k best records of each of `descs` passing q's filters: by recency where each description's
    records share one probability (an index scan of (desc_id, time_s DESC)), else by probability."""
    where, params = _filters(q)
    where.append(sql.SQL("r.desc_id = d.desc_id"))
    params["descs"] = descs.tolist()
    params["k"] = q.top_k
    args: list[sql.Composable] = [sql.SQL("%(descs)s::int[]")]
    names = ["desc_id"]
    order: sql.Composable = sql.SQL("r.time_s DESC, r.record_id DESC")
    factors = ranked.order.factors
    if not uniform and factors.columns:
        terms = []
        for j, column in enumerate(factors.columns):
            params[f"a{j}"] = factors.a[descs, j].tolist()
            params[f"b{j}"] = factors.b[descs, j].tolist()
            args += [sql.SQL(f"%(a{j})s::float8[]"), sql.SQL(f"%(b{j})s::float8[]")]
            names += [f"a{j}", f"b{j}"]
            # As probability.SlotFactors.rows computes it (a confidence not stated counts as certain).
            terms.append(
                sql.SQL("greatest(0, least(1, d.{a} + d.{b} * coalesce(r.conf[{c}], 1)))").format(
                    a=sql.Identifier(f"a{j}"), b=sql.Identifier(f"b{j}"), c=sql.Literal(column + 1)
                )
            )
        order = sql.SQL("{} DESC, r.time_s DESC, r.record_id DESC").format(sql.SQL(" * ").join(terms))
    unnest = sql.SQL("unnest({args}) AS d({names})").format(
        args=sql.SQL(", ").join(args), names=sql.SQL(", ").join(sql.Identifier(n) for n in names)
    )
    stmt = sql.SQL(
        "SELECT {columns} FROM {unnest} CROSS JOIN LATERAL "
        "(SELECT * FROM records r WHERE {where} ORDER BY {order} LIMIT %(k)s) r"
    ).format(columns=sql.SQL(_COLUMNS), unnest=unnest, where=sql.SQL(" AND ").join(where), order=order)
    return stmt, params


def _conf_matrix(rows: Sequence[FetchedRow], width: int) -> NDArray[np.float32]:
    out = np.full((len(rows), width), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row[6]:
            for j, c in enumerate(row[6][:width]):
                if c is not None:
                    out[i, j] = c
    return out


def top_rows(
    q: Query, ranked: Ranked, fetch: Fetch
) -> tuple[list[FetchedRow], NDArray[np.float64], NDArray[np.float64]]:
    """The q.top_k most probable records passing the filters, their probabilities and per-slot probabilities;
    ties by the description's bound, its rank, then the most recent (then highest id), as RecordStore does.

    Descriptions are visited best first, a few at a time, until top_k records are at least as probable as
    the next description's bound; each visit fetches at most top_k records per description.
    """
    order = ranked.order
    if q.stream_id:
        where, params = _filters(q)
        params["cap"] = STREAM_FIRST_MAX + 1
        stmt = sql.SQL("SELECT {} FROM records r WHERE {} LIMIT %(cap)s").format(
            sql.SQL(_COLUMNS), sql.SQL(" AND ").join(where)
        )
        got = fetch(stmt, params)
        if len(got) <= STREAM_FIRST_MAX:  # all of them: rank them here
            wanted = order.eligible
            got = [r for r in got if r[0] < len(wanted) and wanted[r[0]]]
            return _best(q, ranked, got, [_probability(got, ranked)])
    rows: list[FetchedRow] = []
    probs: list[NDArray[np.float64]] = []
    pos, factor = 0, 1
    while True:
        p = np.concatenate(probs) if probs else np.zeros(0)
        kept = p[p >= q.min_probability]
        if not order.covers(pos):
            break
        if len(kept) >= q.top_k:
            kth = -np.partition(-kept, q.top_k - 1)[q.top_k - 1]
            if kth >= order.bound[order.order[pos]]:
                break
        want = (int(order.cum[pos - 1]) if pos else 0) + max(q.top_k - len(kept), 1) * factor
        end = order.chunk(pos, want)
        descs = order.order[pos:end]
        descs = descs[order.counts[descs] > 0]
        uniform = ranked.uniform(descs)
        for same in (True, False):
            part = descs[uniform == same]
            if len(part):
                got = fetch(*_statement(q, ranked, part, uniform=same))
                rows += got
                probs.append(_probability(got, ranked))
        pos, factor = end, factor * 4
    return _best(q, ranked, rows, probs)


def _best(
    q: Query, ranked: Ranked, rows: list[FetchedRow], probs: list[NDArray[np.float64]]
) -> tuple[list[FetchedRow], NDArray[np.float64], NDArray[np.float64]]:
    """The top_k of `rows` (their probabilities in `probs`, in order) by probability, the description's
    place in the visit order, recency, id, then the order fetched."""
    p = np.concatenate(probs) if probs else np.zeros(0)
    keep = np.flatnonzero(p >= q.min_probability)
    desc = np.asarray([rows[i][0] for i in keep], dtype=np.int64)
    time_s = np.asarray([rows[i][4] for i in keep], dtype=np.float64)
    record_id = np.asarray([rows[i][2] for i in keep], dtype=np.int64)
    keys = (keep, -record_id, -time_s, *ranked.order.position_key(desc), -p[keep])
    key = keep[np.lexsort(keys)[: q.top_k]]
    chosen = [rows[i] for i in key]
    return chosen, p[key], _per_slot(chosen, ranked)


def _per_slot(rows: Sequence[FetchedRow], ranked: Ranked) -> NDArray[np.float64]:
    factors = ranked.order.factors
    descs = np.asarray([r[0] for r in rows], dtype=np.int64)
    conf = _conf_matrix(rows, ranked.width)[:, list(factors.columns)]
    return factors.rows(descs, conf)


def _probability(rows: Sequence[FetchedRow], ranked: Ranked) -> NDArray[np.float64]:
    out: NDArray[np.float64] = np.prod(_per_slot(rows, ranked), axis=1)
    return out
