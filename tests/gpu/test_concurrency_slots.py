"""Per-model concurrency slots: exact within a process, other processes' published counts included."""

from __future__ import annotations

import json
import time

from apps.gpu import shared, slots

EP = 77


def other_process(count: int, age: float = 0.0) -> None:
    shared.client().hset(
        shared.key("inflight"), "elsewhere:1:abc", json.dumps({"ts": time.time() - age, "counts": {str(EP): count}})
    )
    shared.invalidate()


def test_the_limit_is_exact_within_a_process(fresh_view):
    leases = [slots.try_acquire(EP, 2) for _ in range(3)]
    assert leases[0] and leases[1] and leases[2] is None
    leases[0].release()
    leases[0].release()  # idempotent
    assert slots.try_acquire(EP, 2) is not None
    assert slots.try_acquire(EP, 2) is None


def test_a_limit_of_zero_admits_nothing(fresh_view):
    assert slots.try_acquire(EP, 0) is None


def test_other_processes_in_flight_count_against_the_limit(fresh_view):
    other_process(2)
    assert slots.try_acquire(EP, 2) is None
    assert slots.try_acquire(EP, 3) is not None
    assert slots.in_flight(EP) == 3


def test_a_dead_process_counts_are_ignored(fresh_view):
    other_process(2, age=60)
    assert slots.try_acquire(EP, 1) is not None


def test_this_process_counts_are_published_for_the_others(fresh_view):
    lease = slots.try_acquire(EP, 4)
    slots.flush_releases()
    entry = json.loads(shared.client().hget(shared.key("inflight"), slots.PROCESS_ID))
    assert entry["counts"] == {str(EP): 1}
    lease.release()
    slots.flush_releases()
    entry = json.loads(shared.client().hget(shared.key("inflight"), slots.PROCESS_ID))
    assert entry["counts"] == {}


def test_a_release_is_announced_to_the_other_processes(fresh_view):
    pubsub = shared.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(slots.release_channel())
    try:
        lease = slots.try_acquire(EP, 4)
        slots.flush_releases()
        lease.release()
        slots.flush_releases()
        deadline = time.monotonic() + 10
        message = None
        while message is None and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1.0)
        assert message is not None, "no announcement"
        assert json.loads(message["data"]) == {"pid": slots.PROCESS_ID, "freed": {str(EP): 1}}
    finally:
        pubsub.close()
