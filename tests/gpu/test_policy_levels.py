"""The GPU policy table, level by level: memory pressure, thermal states, gradual recovery, and the
admin-edited table taking effect."""

from __future__ import annotations

import pytest

from apps.gpu import policy
from apps.gpu.models import PolicySettings, PressureLevel, ThermalRule
from apps.gpu.policy import DEFAULT_TABLE, GpuTrackers, ModelInfo, Tracker, evaluate
from tests.gpu.conftest import publish_decision, reading

# rank 1 is the best; "tiny" fits in almost nothing, "big" needs 20 GB.
MODELS = [
    ModelInfo(1, "big", 1, 20_000, 0),
    ModelInfo(2, "mid", 2, 6_000, 0),
    ModelInfo(3, "small", 3, 2_000, 0),
    ModelInfo(4, "tiny", 9, 300, 0),
    ModelInfo(5, "off", 0, 100, 0, enabled=False),
]


def decide(percent: float, temp: float = 40.0, total: int = 100_000) -> dict:
    return evaluate(DEFAULT_TABLE, [reading(percent, temp, total=total)], MODELS, GpuTrackers())


@pytest.mark.parametrize(
    "percent, level, allowed, batch, concurrency",
    [
        (0, "LOW", None, 8, 4),
        (49.9, "LOW", None, 8, 4),
        (50, "NORMAL", None, 6, 2),
        (69, "NORMAL", None, 6, 2),
        (70, "HIGH", [1, 2], 4, 1),
        (84.9, "HIGH", [1, 2], 4, 1),
        (85, "CRITICAL", [2, 3, 4], 1, 0),  # 15 000 MB free: all but the 20 GB model fit
        (99.5, "CRITICAL", [4], 1, 0),  # 500 MB free: only the tiny model
    ],
)
def test_memory_pressure_sets_level_models_batch_and_concurrency(percent, level, allowed, batch, concurrency):
    d = decide(percent)
    assert (d["level"], d["allowed"], d["batch_size"], d["concurrency"]) == (level, allowed, batch, concurrency)


def test_disabled_models_are_never_allowed():
    assert 5 not in decide(75)["allowed"] and 5 not in decide(99)["allowed"]


@pytest.mark.parametrize(
    "temp, thermal, admit_new, admit_critical, concurrency, batch",
    [
        (64.9, "NORMAL", True, True, 4, 8),
        (65, "REDUCE", True, True, 2, 4),  # load halved
        (79.9, "REDUCE", True, True, 2, 4),
        (80, "PAUSE", False, True, 0, 1),  # new work waits; CRITICAL priority still runs
        (85, "STOP", False, False, 0, 1),  # everything waits
    ],
)
def test_temperature_sets_the_thermal_state(temp, thermal, admit_new, admit_critical, concurrency, batch):
    d = decide(10, temp)
    assert (d["thermal"], d["admit_new"], d["admit_critical"], d["concurrency"], d["batch_size"]) == (
        thermal,
        admit_new,
        admit_critical,
        concurrency,
        batch,
    )


def test_the_worst_gpu_decides():
    d = evaluate(DEFAULT_TABLE, [reading(10, index=0), reading(90, 70, index=1)], MODELS, GpuTrackers())
    assert (d["level"], d["thermal"]) == ("CRITICAL", "REDUCE")
    assert [g["level"] for g in d["gpus"]] == ["LOW", "CRITICAL"]


def test_pressure_rises_at_once_but_recovers_one_step_at_a_time_after_a_hold():
    rows, t = DEFAULT_TABLE["levels"], Tracker()
    hold, margin = 10.0, 5.0

    def at(percent: float, now: float) -> str:
        return rows[t.update(rows, percent, margin, hold, now)]["level"]

    assert at(10, 0) == "LOW"
    assert at(90, 1) == "CRITICAL"  # straight up
    assert at(10, 2) == "CRITICAL"  # the drop starts the hold
    assert at(10, 11) == "CRITICAL"  # 9 s: still holding
    assert at(10, 12.5) == "HIGH"  # one step down, not to LOW
    assert at(10, 20) == "HIGH"
    assert at(10, 22.5) == "NORMAL"
    assert at(48, 33) == "NORMAL"  # within the margin below NORMAL's 50 %: no further step
    assert at(48, 60) == "NORMAL"
    assert at(44, 61) == "NORMAL"  # clear of the margin: a new hold begins
    assert at(44, 71.5) == "LOW"


def test_a_reading_back_above_the_margin_restarts_the_hold():
    rows, t = DEFAULT_TABLE["levels"], Tracker()
    t.update(rows, 90, 5, 10, 0)
    t.update(rows, 70, 5, 10, 1)  # HIGH range, 15 below CRITICAL: hold starts
    t.update(rows, 82, 5, 10, 6)  # back within the margin: hold cancelled
    assert rows[t.update(rows, 70, 5, 10, 12)]["level"] == "CRITICAL"
    assert rows[t.update(rows, 70, 5, 10, 22.5)]["level"] == "HIGH"


def test_priority_limits_under_each_state():
    def state(percent: float, temp: float = 40) -> policy.PolicyState:
        publish_decision([reading(percent, temp)])
        return policy.current_policy()

    low = state(10)
    # LOW and NORMAL stop short of the slot kept for urgent work (25 % of 4); HIGH and CRITICAL may take it
    assert (low.limit_for(0), low.limit_for(1), low.limit_for(2), low.limit_for(3)) == (3, 3, 4, 4)
    critical = state(90)
    assert (critical.limit_for(1), critical.limit_for(3)) == (0, 1)  # new work waits; CRITICAL one at a time
    paused = state(10, 82)
    assert (paused.limit_for(2), paused.limit_for(3)) == (0, 1)
    stopped = state(10, 90)
    assert (stopped.limit_for(2), stopped.limit_for(3)) == (0, 0)


def test_without_a_monitor_the_low_row_of_the_table_applies():
    p = policy.current_policy()
    assert (p.level, p.concurrency, p.batch_size, p.allowed, p.sampled) == ("LOW", 4, 8, None, False)


@pytest.mark.django_db(transaction=True)
def test_the_seeded_table_is_the_design_table_and_an_admin_edit_applies_everywhere(fresh_view):
    import importlib

    from django.apps import apps

    # An earlier transactional test may have flushed the migration's rows: seed again (idempotent).
    importlib.import_module("apps.gpu.migrations.0002_seed_policy").seed(apps, None)
    table = policy.load_table()
    assert table["levels"] == DEFAULT_TABLE["levels"] and table["thermal"] == DEFAULT_TABLE["thermal"]
    assert PolicySettings.objects.count() == 1
    low = PressureLevel.objects.get(level="LOW")
    low.concurrency, low.batch_size = 16, 32
    low.save()  # the signal publishes the table on commit
    ThermalRule.objects.filter(state="REDUCE").update(from_celsius=60)
    p = policy.current_policy()
    assert (p.concurrency, p.batch_size) == (16, 32)
    edited = policy.load_table()
    assert evaluate(edited, [reading(10, 62)], [], GpuTrackers())["thermal"] == "REDUCE"
