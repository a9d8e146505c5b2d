"""The GPU policy, enforced in one place.

The monitor turns readings into a decision (``evaluate``: pressure level and thermal state with
hysteresis, allowed models, batch size, concurrency) and publishes it; every request path -- the
sync chat path and the queue workers alike -- asks ``current_policy()`` and ``choose()``, which
read only this process's view of the shared state (no I/O on the hot path).

Levels (defaults, admin-editable in PressureLevel/ThermalRule):

    memory used  level     models allowed           batch  concurrency
    0-50 %       LOW       all                      8      4
    50-70 %      NORMAL    all                      6      2
    70-85 %      HIGH      top 2 by rank            4      1
    85+ %        CRITICAL  those that fit free mem  1      0 (new work waits)

    < 65 °C NORMAL; 65-80 REDUCE (concurrency and batch halved); 80-85 PAUSE (new work waits);
    >= 85 STOP (everything waits).

Concurrency 0 and PAUSE mean "new work waits": only CRITICAL-priority requests still run, one at a
time per model, on the allowed models.

Reserved headroom (``PolicySettings.urgent_reserve_percent``, 25 % by default): that share of each
level's concurrency (after the thermal factor, rounded down, never all of it) is kept for CRITICAL
and HIGH. NORMAL and LOW requests are admitted up to ``concurrency - reserved``, so a flood of them
(one location's batch, say) leaves a slot free and a STAT question starts at once, in any process,
instead of waiting for the flood's turn. The price: with no urgent work about, a quarter of the
slots of a 4-slot model idle. Rounding down means a model of 1 or 2 slots reserves none at 25 %:
there the line's priority order (apps/gpu/slots.py) bounds CRITICAL's wait to one slot's turn
within a process. STOP holds CRITICAL priority too. Recovery is gradual: the
level rises at once, but falls one step at a time, only after the reading has stayed
``recovery_margin`` below the level's threshold for ``recovery_hold_seconds``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.gpu import circuit, shared
from apps.gpu.models import PolicySettings, PressureLevel, ThermalRule
from apps.gpu.priority import Priority

DEFAULT_TABLE: dict[str, Any] = {
    "levels": [
        {"level": "LOW", "from": 0.0, "allowed": "all", "top_n": 2, "batch": 8, "concurrency": 4},
        {"level": "NORMAL", "from": 50.0, "allowed": "all", "top_n": 2, "batch": 6, "concurrency": 2},
        {"level": "HIGH", "from": 70.0, "allowed": "top_n", "top_n": 2, "batch": 4, "concurrency": 1},
        {"level": "CRITICAL", "from": 85.0, "allowed": "fits_free", "top_n": 2, "batch": 1, "concurrency": 0},
    ],
    "thermal": [
        {"state": "NORMAL", "from": -273.0, "factor": 1.0, "new": True, "critical": True},
        {"state": "REDUCE", "from": 65.0, "factor": 0.5, "new": True, "critical": True},
        {"state": "PAUSE", "from": 80.0, "factor": 0.0, "new": False, "critical": True},
        {"state": "STOP", "from": 85.0, "factor": 0.0, "new": False, "critical": False},
    ],
    "margin_percent": 5.0,
    "margin_celsius": 3.0,
    "hold_seconds": 10.0,
    # How long a request waits in a model's line for a slot: a minute, about what an LLM answer
    # takes under load (apps/gpu/slots.py); admin-editable (PolicySettings.admission_wait_seconds).
    "wait_seconds": 60.0,
    # Share of each model's concurrency only CRITICAL and HIGH may hold (PolicySettings.urgent_reserve_percent).
    "urgent_reserve_percent": 25.0,
}


def load_table() -> dict[str, Any]:
    """The policy table from the database (the defaults for any part not there)."""
    table = dict(DEFAULT_TABLE)
    levels = [
        {
            "level": p.level,
            "from": p.memory_from_percent,
            "allowed": p.models_allowed,
            "top_n": p.top_n,
            "batch": p.batch_size,
            "concurrency": p.concurrency,
        }
        for p in PressureLevel.objects.all()
    ]
    if levels:
        table["levels"] = sorted(levels, key=lambda r: r["from"])
    thermal = [
        {
            "state": t.state,
            "from": t.from_celsius,
            "factor": t.load_factor,
            "new": t.admits_new_work,
            "critical": t.admits_critical,
        }
        for t in ThermalRule.objects.all()
    ]
    if thermal:
        table["thermal"] = sorted(thermal, key=lambda r: r["from"])
    s = PolicySettings.objects.first()
    if s is not None:
        table.update(
            margin_percent=s.recovery_margin_percent,
            margin_celsius=s.recovery_margin_celsius,
            hold_seconds=s.recovery_hold_seconds,
            wait_seconds=s.admission_wait_seconds,
            urgent_reserve_percent=s.urgent_reserve_percent,
        )
    return table


def publish_table() -> dict[str, Any]:
    """Load the table and share it, so every process applies an admin edit without a monitor."""
    table = load_table()
    shared.publish("table", table)
    shared.invalidate()
    return table


# --- hysteresis ---------------------------------------------------------------------------


def _raw_index(rows: Sequence[dict[str, Any]], value: float) -> int:
    index = 0
    for i, row in enumerate(rows):
        if value >= row["from"]:
            index = i
    return index


@dataclass
class Tracker:
    """One reading's level with gradual recovery (used for memory % and for °C)."""

    index: int = 0
    below_since: float | None = None

    def update(
        self, rows: Sequence[dict[str, Any]], value: float | None, margin: float, hold: float, now: float
    ) -> int:
        raw = _raw_index(rows, value) if value is not None else 0
        if raw >= self.index:
            self.index, self.below_since = raw, None
            return self.index
        # Below the current level: step down one level only after holding clear of its threshold.
        clear = value is None or value < rows[self.index]["from"] - margin
        if not clear:
            self.below_since = None
        elif self.below_since is None:
            self.below_since = now
        elif now - self.below_since >= hold:
            self.index = max(self.index - 1, raw)
            self.below_since = now
        return self.index


@dataclass
class GpuTrackers:
    memory: dict[int, Tracker] = field(default_factory=dict)
    thermal: dict[int, Tracker] = field(default_factory=dict)


# --- evaluation (monitor side) ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    rank: int
    vram_mb: int
    gpu_index: int | None
    enabled: bool = True


def evaluate(
    table: dict[str, Any],
    readings: Sequence[Any],
    models: Iterable[ModelInfo],
    trackers: GpuTrackers,
    now: float | None = None,
    level_floor: str | None = None,
) -> dict[str, Any]:
    """The policy decision for these readings (JSON-ready). ``level_floor`` keeps the level at least
    there (after an out-of-memory, until the monitor lifts it)."""
    now = time.monotonic() if now is None else now
    levels, thermal = table["levels"], table["thermal"]
    names = [r["level"] for r in levels]
    floor = names.index(level_floor) if level_floor in names else 0
    per_gpu = []
    worst_level, worst_thermal = floor, 0
    for r in readings:
        mt = trackers.memory.setdefault(r.index, Tracker())
        tt = trackers.thermal.setdefault(r.index, Tracker())
        # The floor applies on top of the readings' own level, so lifting it takes effect at once.
        li = max(
            mt.update(
                levels,
                r.memory_percent if r.memory_total_mb else None,
                table["margin_percent"],
                table["hold_seconds"],
                now,
            ),
            floor,
        )
        ti = tt.update(thermal, r.temperature_c, table["margin_celsius"], table["hold_seconds"], now)
        worst_level, worst_thermal = max(worst_level, li), max(worst_thermal, ti)
        per_gpu.append({"index": r.index, "level": levels[li]["level"], "thermal": thermal[ti]["state"]})
    row, therm = levels[worst_level], thermal[worst_thermal]

    enabled = sorted((m for m in models if m.enabled), key=lambda m: (m.rank, m.name))
    if row["allowed"] == "top_n":
        allowed: list[int] | None = [m.id for m in enabled[: row["top_n"]]]
    elif row["allowed"] == "fits_free":
        # A model with no VRAM estimate counts as tiny; one on a known GPU must fit that GPU's free memory.
        free = {r.index: r.memory_free_mb for r in readings}
        most = max(free.values(), default=0)
        allowed = [m.id for m in enabled if m.vram_mb == 0 or m.vram_mb <= free.get(m.gpu_index, most)]
    else:
        allowed = None

    factor = therm["factor"]

    def scaled(n: int) -> int:
        return 0 if n <= 0 or factor <= 0 else max(1, math.floor(n * factor))

    admit_new = therm["new"] and row["concurrency"] > 0
    concurrency = scaled(row["concurrency"]) if therm["new"] else 0
    return {
        "level": row["level"],
        "thermal": therm["state"],
        "gpus": per_gpu,
        "batch_size": max(1, scaled(row["batch"])) if therm["critical"] else 1,
        "concurrency": concurrency,
        "reserved": reserved_slots(concurrency, table.get("urgent_reserve_percent", 0.0)),
        "allowed": allowed,
        "admit_new": admit_new,
        "admit_critical": bool(therm["critical"]),
        "wait_seconds": table["wait_seconds"],
        "floor": level_floor,
    }


def reserved_slots(concurrency: int, percent: float) -> int:
    """Slots of ``concurrency`` kept for CRITICAL and HIGH: ``percent`` of them rounded down, and
    at least one left for everything else (a reserve of all would starve NORMAL and LOW)."""
    if concurrency <= 1 or percent <= 0:
        return 0
    return min(math.floor(concurrency * percent / 100 + 1e-9), concurrency - 1)


# --- the request path ------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyState:
    level: str
    thermal: str
    batch_size: int
    concurrency: int
    reserved: int  # of ``concurrency``, kept for CRITICAL and HIGH
    allowed: frozenset[int] | None  # None: every enabled model
    admit_new: bool
    admit_critical: bool
    wait_seconds: float
    simulated: bool
    sampled: bool  # False: no monitor publishes readings; the LOW row applies

    def allows_model(self, endpoint_id: int) -> bool:
        return self.allowed is None or endpoint_id in self.allowed

    def limit_for(self, priority: int) -> int:
        """How many requests of this priority may be in flight per model now (every priority
        counted): NORMAL and LOW stop short of the slots reserved for urgent work."""
        if priority >= Priority.CRITICAL:
            return max(self.concurrency, 1) if self.admit_critical else 0
        if not self.admit_new:
            return 0
        return self.concurrency if priority >= Priority.HIGH else self.concurrency - self.reserved


_policy_cache: tuple[shared.View, PolicyState] | None = None  # keyed by the view object itself


def _from_decision(d: dict[str, Any], simulated: bool, sampled: bool) -> PolicyState:
    allowed = d.get("allowed")
    return PolicyState(
        level=d["level"],
        thermal=d["thermal"],
        batch_size=int(d["batch_size"]),
        concurrency=int(d["concurrency"]),
        reserved=int(d.get("reserved", 0)),
        allowed=frozenset(allowed) if allowed is not None else None,
        admit_new=bool(d["admit_new"]),
        admit_critical=bool(d["admit_critical"]),
        wait_seconds=float(d.get("wait_seconds", DEFAULT_TABLE["wait_seconds"])),
        simulated=simulated,
        sampled=sampled,
    )


def current_policy() -> PolicyState:
    """The policy in force, from this process's view of the shared state (no I/O when fresh)."""
    global _policy_cache
    v = shared.view()
    cached = _policy_cache
    if cached is not None and cached[0] is v:
        return cached[1]
    decision = v.state.get("policy")
    if decision:
        state = _from_decision(decision, bool(v.state.get("simulated")), True)
    else:
        state = _from_decision(evaluate(v.table or DEFAULT_TABLE, [], [], GpuTrackers()), False, False)
    _policy_cache = (v, state)
    return state


def batch_size() -> int:
    """How many tasks for one model the queue may dispatch together now."""
    return current_policy().batch_size


@dataclass(frozen=True)
class Choice:
    candidates: tuple[Any, ...]  # EndpointInfo, best first
    skipped: tuple[tuple[str, str], ...]  # (model name, why)
    policy: PolicyState


def _healthy(v: shared.View, endpoint_id: int, stale_after: float) -> tuple[bool, str]:
    entry = v.health.get(endpoint_id)
    if entry is None or entry["ok"] or time.time() - entry["ts"] > stale_after:
        return True, ""
    return False, entry.get("detail") or "health check failed"


def choose(candidates: Sequence[Any], priority: int = Priority.NORMAL, *, keep_first: bool = False) -> Choice:
    """Filter and order a route's candidates: skip disabled, policy-excluded, unhealthy and
    circuit-open ones; among consecutive candidates of equal rank prefer the lower latency EMA.
    ``keep_first``: the client named the first candidate explicitly; it is not reordered."""
    policy = current_policy()
    v = shared.view()
    stale = 3 * settings.MEDAI_HEALTH_INTERVAL
    kept: list[Any] = []
    skipped: list[tuple[str, str]] = []
    for ep in candidates:
        if not ep.enabled:
            skipped.append((ep.name, "disabled"))
        elif not policy.allows_model(ep.id):
            skipped.append((ep.name, f"not allowed at GPU pressure {policy.level}"))
        elif circuit.is_open(ep.id):
            skipped.append((ep.name, "circuit open after repeated failures"))
        else:
            healthy, why = _healthy(v, ep.id, stale)
            if healthy:
                kept.append(ep)
            else:
                skipped.append((ep.name, f"unhealthy: {why}"))
    if len(kept) > 1 and v.ema_ms:
        head = [kept.pop(0)] if keep_first and kept and candidates and kept[0] is candidates[0] else []
        ordered: list[Any] = []
        i = 0
        while i < len(kept):
            j = i
            while j + 1 < len(kept) and kept[j + 1].rank == kept[i].rank:
                j += 1
            group = kept[i : j + 1]
            if len(group) > 1:
                group.sort(key=lambda e: v.ema_ms.get(e.id, math.inf))  # stable; unmeasured ones last
            ordered += group
            i = j + 1
        kept = head + ordered
    return Choice(tuple(kept), tuple(skipped), policy)
