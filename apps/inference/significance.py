"""The statistical tests medai draws verdicts from, in one place: the A/B comparison of a route's
arms (apps/inference/experiments.py) and the drift of a model from its own baseline
(apps/inference/quality.py) use the same functions.

* ``mann_whitney``: the Mann-Whitney U test, two-sided, by the normal approximation with a
  continuity correction; ties get their average rank but the variance has no tie correction
  (which makes it conservative when there are many ties: p comes out larger, never smaller).
  Assumes two independent samples; it asks whether values of one tend to be larger than the
  other's (a shift of the distribution), not whether the means differ. Sound from ~20 a side.
* ``two_proportions``: the pooled two-proportion z-test, two-sided: independent trials, and at
  least ~5 successes and 5 failures expected in each sample for the normal approximation.
* ``fisher_exact``: Fisher's exact test of the same 2×2 table, two-sided (the tables no more
  likely than the one seen, under fixed margins): no large-sample assumption, so it stands in for
  the z-test where that one's expected counts are under 5 (``compare_proportions``). Rare events
  (a 2% refusal rate on 60 answers a week) are where the z-test's p is far too small.

Written out rather than taken from SciPy: the two tests are a few lines each and SciPy would be
the only reason to install it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(U of ``a``, two-sided p) by the normal approximation, ranks averaged over ties."""
    n1, n2 = len(a), len(b)
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(pooled)
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    r1 = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    if sd == 0:
        return u1, 1.0
    z = (abs(u1 - mean) - 0.5) / sd
    return u1, min(1.0, 2 * normal_sf(max(z, 0.0)))


def two_proportions(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) of the pooled two-proportion z-test (successes ``x`` of trials ``n``)."""
    pooled = (x1 + x2) / (n1 + n2)
    sd = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if sd == 0:
        return 0.0, 1.0
    z = (x1 / n1 - x2 / n2) / sd
    return z, min(1.0, 2 * normal_sf(abs(z)))


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (the value at 1-based position ⌈q·n⌉ of the sorted values,
    as apps/inference/dashboard/stats.py's database percentiles); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p of Fisher's exact test: successes ``x1`` of ``n1`` against ``x2`` of ``n2``."""
    successes, total = x1 + x2, n1 + n2
    low, high = max(0, successes - n2), min(successes, n1)
    base = _log_choose(total, n1)

    def log_p(k: int) -> float:
        return _log_choose(successes, k) + _log_choose(total - successes, n1 - k) - base

    seen = log_p(x1)
    p = sum(math.exp(lp) for lp in (log_p(k) for k in range(low, high + 1)) if lp <= seen + 1e-7)
    return min(1.0, p)


MIN_EXPECTED = 5


def compare_proportions(x1: int, n1: int, x2: int, n2: int) -> tuple[str, float | None, float]:
    """(test name, z or None, two-sided p): the z-test where every expected count of the 2×2
    table is at least ``MIN_EXPECTED``, Fisher's exact test where one is not."""
    pooled = (x1 + x2) / (n1 + n2)
    expected = min(n1, n2) * min(pooled, 1 - pooled)
    if expected >= MIN_EXPECTED:
        z, p = two_proportions(x1, n1, x2, n2)
        return "two-proportion z", z, p
    return "Fisher's exact", None, fisher_exact(x1, n1, x2, n2)
