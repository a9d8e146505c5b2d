"""A/B traffic splits on agent routes: which arm a request goes to, and how the arms compare.

**The split.** The models of an agent route that have a ``weight`` (admin, ``AgentRouteEntry``)
are its arms: a request for the agent type (not for a model by name) is assigned one in proportion
to the weights, sticky per user or per conversation (``AgentRoute.split_sticky``): the arm is
the same for the same caller as long as the weights stay. The assigned arm is tried first; the
route's other models follow in position order, as fallbacks (an arm that is down does not fail
the request: the record says which model answered, and ``arm`` which one was assigned). Every
record (``InferenceTask.arm``) and inference audit event carries the arm.

**The comparison** (``compare``), per arm over a window: requests, failure rate, latency p50 and
p95, and clinician ratings where there are any. Two tests between the two arms with the most
requests, each with its assumptions:

* latency: the Mann-Whitney U test (two-sided, normal approximation with a continuity
  correction, no tie correction): the arms' requests are independent samples; it asks whether
  one arm's latencies tend to be larger, not whether the means differ; sound from ~20 per arm.
* failure rate (and the thumbs-up rate when ratings exist): the two-proportion z-test (pooled,
  two-sided): independent requests, each arm with at least 5 successes and 5 failures expected.

The tests themselves are apps/inference/significance.py's (the drift checks use them too).

The verdict names the better arm when p < ``ALPHA`` and says "no significant difference"
otherwise, with the p-value; stopping or promoting an arm is an admin action (audited).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from apps.inference import router
from apps.inference.models import Feedback, InferenceTask
from apps.inference.significance import mann_whitney, two_proportions

ALPHA = 0.05
MIN_PER_ARM = 20  # below it a verdict says "too few requests"


def sticky_key(route: router.Route, user_id: int | None, conversation_id: Any = None) -> str:
    """What keeps a caller on one arm: the conversation (when the route says so and there is one), else the user."""
    if route.sticky == "conversation" and conversation_id:
        return f"c:{conversation_id}"
    return f"u:{user_id}"


def assign(route: router.Route, key: str) -> router.Route:
    """The route with its arm assigned for ``key`` (tried first, the others after it in order);
    unchanged when the route has no split."""
    if not route.weights or route.arm:
        return route
    arms = [(ep, w) for ep, w in zip(route.candidates, route.weights, strict=True) if w > 0]
    if not arms:
        return route
    total = sum(w for _, w in arms)
    digest = hashlib.sha256(f"{route.agent_type}\0{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for ep, w in arms:
        if point < w:
            chosen = ep
            break
        point -= w
    candidates = (chosen, *(e for e in route.candidates if e.id != chosen.id))
    return dataclasses.replace(route, candidates=candidates, arm=chosen.name)


# --- the comparison ---------------------------------------------------------------------------


@dataclass
class ArmStats:
    arm: str
    requests: int = 0
    failures: int = 0
    latencies: list[int] = field(default_factory=list, repr=False)
    ratings_up: int = 0
    ratings_down: int = 0

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def rated(self) -> int:
        return self.ratings_up + self.ratings_down

    @property
    def up_rate(self) -> float | None:
        return self.ratings_up / self.rated if self.rated else None

    def latency_pct(self, q: float) -> int | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Test:
    name: str
    statistic: float | None
    p_value: float | None
    verdict: str


@dataclass
class Comparison:
    agent_type: str
    since: datetime
    arms: list[ArmStats]
    tests: list[Test]


def _ratings(agent_type: str, since: datetime) -> dict[str, tuple[int, int]]:
    """Thumbs up and down per arm, from the arm each rating is stored against (``Feedback.arm``)."""
    out: dict[str, tuple[int, int]] = {}
    rows = Feedback.objects.filter(agent_type=agent_type, created_at__gte=since).exclude(arm="")
    for arm, rating in rows.values_list("arm", "rating"):
        up, down = out.get(arm, (0, 0))
        out[arm] = (up + 1, down) if rating == Feedback.Rating.UP else (up, down + 1)
    return out


def compare(agent_type: str, *, days: int = 30, now: datetime | None = None) -> Comparison:
    """The arms of ``agent_type``'s split over the last ``days`` days, and the tests between the
    two with the most requests."""
    since = (now or timezone.now()) - timedelta(days=days)
    done = (InferenceTask.Status.COMPLETED, InferenceTask.Status.FAILED)
    rows = (
        InferenceTask.objects.filter(agent_type=agent_type, created_at__gte=since, status__in=done)
        .exclude(arm="")
        .filter(Q(cached=False))
        .values_list("arm", "status", "latency_ms")
    )
    arms: dict[str, ArmStats] = {}
    for arm, status, latency in rows:
        stats = arms.setdefault(arm, ArmStats(arm))
        stats.requests += 1
        if status == InferenceTask.Status.FAILED:
            stats.failures += 1
        elif latency is not None:
            stats.latencies.append(latency)
    for arm, (up, down) in _ratings(agent_type, since).items():
        stats = arms.setdefault(arm, ArmStats(arm))
        stats.ratings_up, stats.ratings_down = up, down
    ordered = sorted(arms.values(), key=lambda s: (-s.requests, s.arm))
    return Comparison(agent_type, since, ordered, _tests(ordered[:2]))


def _tests(pair: list[ArmStats]) -> list[Test]:
    if len(pair) < 2:
        return [Test("split", None, None, "fewer than two arms have requests: nothing to compare")]
    a, b = pair
    tests = []
    if len(a.latencies) < MIN_PER_ARM or len(b.latencies) < MIN_PER_ARM:
        tests.append(Test("latency (Mann-Whitney U)", None, None, f"too few requests (< {MIN_PER_ARM} per arm)"))
    else:
        u, p = mann_whitney(a.latencies, b.latencies)
        faster = a.arm if u < len(a.latencies) * len(b.latencies) / 2 else b.arm
        tests.append(Test("latency (Mann-Whitney U)", u, p, _verdict(p, f"{faster} is faster")))
    z, p = two_proportions(a.failures, a.requests, b.failures, b.requests)
    fewer = a.arm if a.failures / a.requests < b.failures / b.requests else b.arm
    tests.append(Test("failure rate (two-proportion z)", z, p, _verdict(p, f"{fewer} fails less")))
    if a.rated >= 5 and b.rated >= 5:
        z, p = two_proportions(a.ratings_up, a.rated, b.ratings_up, b.rated)
        better = a.arm if (a.up_rate or 0) > (b.up_rate or 0) else b.arm
        tests.append(Test("thumbs-up rate (two-proportion z)", z, p, _verdict(p, f"{better} is rated better")))
    else:
        tests.append(Test("thumbs-up rate (two-proportion z)", None, None, "too few ratings (< 5 per arm)"))
    return tests


def _verdict(p: float, finding: str) -> str:
    confidence = f"p = {p:.3g}, confidence {100 * (1 - p):.1f}%"
    if p < ALPHA:
        return f"{finding} ({confidence})"
    return f"no significant difference ({confidence}; alpha {ALPHA})"
