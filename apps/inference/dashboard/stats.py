"""Percentiles computed by the database, on every backend medai runs on.

Nearest-rank percentiles (the p-th is the value at 1-based position ⌈p·n⌉ of the sorted values),
which PostgreSQL's ``PERCENTILE_DISC`` computes: on PostgreSQL one aggregate query gives every
percentile of every window (``FILTER``) and group at once. SQLite has no percentile function, so
there each one is a ``COUNT`` and an ``ORDER BY … LIMIT 1 OFFSET k`` (sorted by the database, one
row read): a few queries per group, never a row per task into Python. Both give the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

from django.db import connections
from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet


class PercentileDisc(Aggregate):
    """``PERCENTILE_DISC(fraction) WITHIN GROUP (ORDER BY expression)``: PostgreSQL only."""

    function = "PERCENTILE_DISC"
    name = "PercentileDisc"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


def _key(window: str, fraction: float) -> str:
    return f"{window}_p{round(fraction * 100)}"


def percentiles(
    qs: QuerySet[Any],
    field: str,
    windows: dict[str, Q],
    fractions: tuple[float, ...] = (0.5, 0.95),
    group: str | None = None,
) -> dict[Any, dict[str, float | None]]:
    """Nearest-rank percentiles of ``field`` over the rows of ``qs`` (rows where it is null left
    out), for each window (a name → the ``Q`` its rows satisfy) and fraction, per value of
    ``group`` (or under the key None without one): ``{group: {"hour_p50": 12.0, …}}``, None where
    a window has no value."""
    qs = qs.filter(**{f"{field}__isnull": False}).order_by()
    if connections[qs.db].vendor == "postgresql":
        aggregates = {
            _key(w, p): PercentileDisc(F(field), p, filter=where) for w, where in windows.items() for p in fractions
        }
        if group is None:
            return {None: qs.aggregate(**aggregates)}
        return {row.pop(group): row for row in qs.values(group).annotate(**aggregates)}
    return _by_offset(qs, field, windows, fractions, group)


def _by_offset(
    qs: QuerySet[Any], field: str, windows: dict[str, Q], fractions: tuple[float, ...], group: str | None
) -> dict[Any, dict[str, float | None]]:
    counts = {w: Count("pk", filter=where) for w, where in windows.items()}
    rows: list[dict[str, Any]]
    if group is None:
        rows = [qs.aggregate(**counts)]
    else:
        rows = list(qs.values(group).annotate(**counts))
    out: dict[Any, dict[str, float | None]] = {}
    for row in rows:
        value = row[group] if group is not None else None
        members = qs.filter(**{group: value}) if group is not None else qs
        found: dict[str, float | None] = {}
        for w, where in windows.items():
            n = row[w]
            for p in fractions:
                if not n:
                    found[_key(w, p)] = None
                    continue
                k = max(math.ceil(p * n), 1) - 1
                found[_key(w, p)] = float(members.filter(where).order_by(field).values_list(field, flat=True)[k])
        out[value] = found
    return out
