"""The circuit breaker per backend: closed → open after 5 consecutive failures → half-open after
30 s (one trial) → closed on success, open again on failure; shared by every process."""

from __future__ import annotations

import pytest

from apps.gpu import circuit, shared

EP = 4242


@pytest.fixture
def clock(monkeypatch, fresh_view):
    """Circuit time under the test's control."""
    now = [1_000_000.0]
    monkeypatch.setattr(circuit.time, "time", lambda: now[0])
    return now


def fail(n: int) -> str:
    state = ""
    for _ in range(n):
        state = circuit.record_failure(EP)
    return state


def test_four_failures_keep_it_closed_and_the_fifth_opens_it(clock):
    assert fail(4) == circuit.CLOSED and circuit.allow(EP)
    assert fail(1) == circuit.OPEN
    assert circuit.is_open(EP) and not circuit.allow(EP)


def test_a_success_resets_the_consecutive_count(clock):
    fail(4)
    circuit.record_success(EP)
    assert fail(4) == circuit.CLOSED


def test_after_the_reset_period_exactly_one_trial_goes_through(clock):
    fail(5)
    clock[0] += 29
    assert not circuit.allow(EP)
    clock[0] += 2
    assert not circuit.is_open(EP)
    assert circuit.allow(EP)  # this caller is the trial
    assert not circuit.allow(EP)  # everyone else waits for its outcome


def test_a_successful_trial_closes_the_circuit(clock):
    fail(5)
    clock[0] += 31
    assert circuit.allow(EP)
    circuit.record_success(EP)
    assert circuit.state_of(EP) == (circuit.CLOSED, 0, 0.0)
    assert circuit.allow(EP) and circuit.allow(EP)


def test_a_failed_trial_opens_it_for_another_period(clock):
    fail(5)
    clock[0] += 31
    assert circuit.allow(EP)
    assert circuit.record_failure(EP) == circuit.OPEN
    assert not circuit.allow(EP)
    clock[0] += 31
    assert circuit.allow(EP)


def test_state_is_shared_through_redis(clock):
    fail(5)
    shared.reset_local()  # what another process sees: only Redis
    assert circuit.state_of(EP)[0] == circuit.OPEN and not circuit.allow(EP)


def test_failures_from_several_processes_add_up(clock):
    fail(3)
    shared.reset_local()
    assert fail(2) == circuit.OPEN


def test_a_passing_health_check_half_opens_an_open_circuit_at_once(clock):
    fail(5)
    circuit.half_open(EP)
    assert circuit.state_of(EP)[0] == circuit.HALF_OPEN
    assert circuit.allow(EP) and not circuit.allow(EP)
