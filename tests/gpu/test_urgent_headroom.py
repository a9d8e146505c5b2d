"""Reserved headroom: a share of each model's slots (25 % by default, admin-editable) is kept for
CRITICAL and HIGH, so a flood of LOW work from one location cannot delay a STAT question from
another, in the same process or in another one (a worker's flood, a web process's question).

Measured in turns, not time: with a slow backend, how many LOW requests started between the
CRITICAL request's arrival and its own start (the backend's arrival log)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.gpu import policy, shared, slots
from apps.gpu.models import PolicySettings
from apps.gpu.policy import ModelInfo
from apps.inference import dispatch
from apps.inference.dispatch import call_with_failover
from apps.inference.router import EndpointInfo
from tests.conftest import register_model
from tests.gpu.conftest import publish_decision, reading
from tests.support.servers import set_stub_mode

ROOT = Path(__file__).resolve().parents[2]
EP = 4712
LOW, NORMAL, HIGH, CRITICAL = 0, 1, 2, 3
FLOODING, ASKING = 1, 2  # locations


def endpoint(pk: int = EP) -> EndpointInfo:
    return EndpointInfo(
        id=pk,
        name=f"model-{pk}",
        kind="openai",
        base_url="http://127.0.0.1:9/v1",
        backend_model="m",
        api_key="",
        context_length=2048,
        vram_mb=0,
        rank=1,
        enabled=True,
        supports_embeddings=False,
    )


def four_slots(pk: int = EP, **override: object) -> None:
    """LOW memory pressure: four requests in flight per model, one of them kept for urgent work."""
    publish_decision([reading(10)], [ModelInfo(pk, f"model-{pk}", 1, 0, None)], wait_seconds=30, **override)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


class Backend:
    """A backend whose answers the test hands out one at a time; it logs starts and ends."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    def call(self, name: str) -> Callable[[EndpointInfo], object]:
        async def answer(ep: EndpointInfo) -> str:
            self.log.append(f"start {name}")
            gate = self.gates.setdefault(name, asyncio.Event())
            await gate.wait()
            self.log.append(f"end {name}")
            return name

        return answer

    def finish(self, name: str) -> None:
        self.gates.setdefault(name, asyncio.Event()).set()

    def running(self) -> list[str]:
        started = [e.removeprefix("start ") for e in self.log if e.startswith("start ")]
        return [n for n in started if f"end {n}" not in self.log]


async def request(backend: Backend, name: str, priority: int, location: int) -> None:
    _, _, lease = await call_with_failover([endpoint()], backend.call(name), priority=priority, location=location)
    lease.release()


# --- the limits ------------------------------------------------------------------------------------


def test_a_quarter_of_the_slots_rounded_down_is_kept_and_never_all_of_them():
    assert [policy.reserved_slots(c, 25) for c in (0, 1, 2, 3, 4, 8)] == [0, 0, 0, 0, 1, 2]
    assert [policy.reserved_slots(4, p) for p in (0, 50, 100)] == [0, 2, 3]  # one slot always left


@pytest.mark.django_db(transaction=True)
def test_the_share_is_the_admins_and_applies_without_a_monitor(fresh_view):
    PolicySettings.objects.update_or_create(pk=1, defaults={"urgent_reserve_percent": 50})
    policy.publish_table()  # what saving the row in admin does (apps/gpu/signals.py)
    p = policy.current_policy()
    assert (p.concurrency, p.reserved) == (4, 2)
    assert [p.limit_for(prio) for prio in (LOW, NORMAL, HIGH, CRITICAL)] == [2, 2, 4, 4]
    PolicySettings.objects.filter(pk=1).update(urgent_reserve_percent=0)
    policy.publish_table()
    assert [policy.current_policy().limit_for(prio) for prio in (LOW, NORMAL, HIGH, CRITICAL)] == [4, 4, 4, 4]


# --- in one process ----------------------------------------------------------------------------------


async def test_a_critical_request_starts_at_once_while_low_work_fills_every_other_slot(fresh_view):
    four_slots()
    backend = Backend()
    flood = [asyncio.create_task(request(backend, f"low-{i}", LOW, FLOODING)) for i in range(12)]
    await until(lambda: len(backend.running()) == 3 and slots.waiting(EP) == 9)
    arrived = len(backend.log)
    critical = asyncio.create_task(request(backend, "critical", CRITICAL, ASKING))
    await until(lambda: "start critical" in backend.log)
    between = backend.log[arrived : backend.log.index("start critical")]
    assert between == []  # no LOW request started, none had to finish first
    assert len(backend.running()) == 4
    backend.finish("critical")
    await critical
    for i in range(12):
        backend.finish(f"low-{i}")
    await asyncio.gather(*flood)
    assert slots.in_flight(EP) == 0


async def test_high_work_may_take_the_reserved_slot_and_normal_work_may_not(fresh_view):
    four_slots()
    backend = Backend()
    low = [asyncio.create_task(request(backend, f"low-{i}", LOW, FLOODING)) for i in range(3)]
    await until(lambda: len(backend.running()) == 3)
    normal = asyncio.create_task(request(backend, "normal", NORMAL, ASKING))
    await until(lambda: slots.waiting(EP) == 1)
    high = asyncio.create_task(request(backend, "high", HIGH, ASKING))
    await until(lambda: "start high" in backend.log)
    assert "start normal" not in backend.log  # it waits for one of the three LOW slots
    backend.finish("high")
    await high
    assert "start normal" not in backend.log  # the freed reserved slot is not NORMAL's either
    backend.finish("low-0")
    await until(lambda: "start normal" in backend.log)
    for name in ("normal", "low-1", "low-2"):
        backend.finish(name)
    await asyncio.gather(normal, *low)


async def test_a_second_urgent_request_gets_the_next_slot_low_work_frees(fresh_view):
    four_slots()
    backend = Backend()
    flood = [asyncio.create_task(request(backend, f"low-{i}", LOW, FLOODING)) for i in range(10)]
    await until(lambda: len(backend.running()) == 3)
    first = asyncio.create_task(request(backend, "critical-1", CRITICAL, ASKING))
    await until(lambda: "start critical-1" in backend.log)
    second = asyncio.create_task(request(backend, "critical-2", CRITICAL, ASKING))
    await until(lambda: slots.waiting(EP) == 8)  # seven LOW and the second CRITICAL
    arrived = len(backend.log)
    backend.finish("low-0")
    await until(lambda: "start critical-2" in backend.log)
    started = [e for e in backend.log[arrived : backend.log.index("start critical-2")] if e.startswith("start")]
    assert started == []  # within one slot's turn: the first slot that freed
    for name in ["critical-1", "critical-2", *(f"low-{i}" for i in range(10))]:
        backend.finish(name)
    await asyncio.gather(first, second, *flood)


# --- across processes: the flood in another one -------------------------------------------------------


@pytest.fixture
def slow_stub(stub_backend: str) -> str:
    """The stub answers each request after 0.3 s (one slot's turn) and logs the order they start in."""
    set_stub_mode(stub_backend, "slow", delay=0.3, log=[])
    return stub_backend


def stub_log(stub: str) -> list[str]:
    return httpx.get(stub.removesuffix("/v1") + "/_stats").json()["log"]


@pytest.fixture
def flood_elsewhere(slow_stub: str) -> Iterator[Callable[[int, int], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(endpoint_id: int, n: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.gpu.flood", slow_stub, str(endpoint_id), str(FLOODING), str(n)],
            cwd=ROOT,
        )
        procs.append(proc)
        deadline = time.monotonic() + 60
        while len(stub_log(slow_stub)) < 3:  # the flood holds every slot it may
            assert proc.poll() is None and time.monotonic() < deadline, "the flood did not start"
            time.sleep(0.01)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


@pytest.fixture
def arrivals(monkeypatch: pytest.MonkeyPatch, slow_stub: str) -> list[int]:
    """The length of the backend's arrival log when each CRITICAL request of this process first
    asked for a slot (the admit step), whether it came over HTTP or from the queue."""
    seen: list[int] = []
    admit = dispatch.admit

    async def noting(choice: Any, pool: Any, priority: int, key: Any, deadline: float) -> Any:
        if priority == CRITICAL and key not in noted:
            noted.add(key)
            seen.append(len(await asyncio.to_thread(stub_log, slow_stub)))
        return await admit(choice, pool, priority, key, deadline)

    noted: set[Any] = set()
    monkeypatch.setattr(dispatch, "admit", noting)
    return seen


def low_started_before(log: list[str], arrived: int, name: str) -> int:
    """How many LOW requests reached the backend between the urgent one's arrival and its start."""
    return sum(1 for entry in log[arrived : log.index(name)] if entry.startswith("low-"))


@pytest.mark.django_db(transaction=True)
def test_a_critical_chat_request_starts_within_one_turn_while_another_process_floods_the_model(
    live_medai, slow_stub, flood_elsewhere, arrivals, charlie, token_for, fresh_view
):
    model = register_model("flooded", slow_stub)
    four_slots(model.pk)
    flood = flood_elsewhere(model.pk, 40)  # LOW from another location: ~10 turns of 4 slots
    answer = httpx.post(
        f"{live_medai}/v1/chat/completions",
        json={"model": "flooded", "priority": "critical", "messages": [{"role": "user", "content": "STAT: K+ 7.1?"}]},
        headers={"Authorization": f"Bearer {token_for(charlie)}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    log = stub_log(slow_stub)
    assert flood.poll() is None  # the flood was still going when the question was answered
    [arrived] = arrivals
    assert low_started_before(log, arrived, "STAT: K+ 7.1?") <= 4  # within one slot's turn (4 slots)
    flood.wait(60)
    assert flood.returncode == 0
    assert httpx.get(slow_stub.removesuffix("/v1") + "/_stats").json()["max_in_flight"] <= 4


@pytest.mark.django_db(transaction=True)
def test_a_critical_async_task_starts_within_one_turn_while_another_process_floods_the_model(
    slow_stub, flood_elsewhere, arrivals, charlie, client_for, fresh_view
):
    from apps.inference import queue
    from apps.inference.models import InferenceTask
    from tests.inference.queue_helpers import drain, submit

    model = register_model("flooded", slow_stub)
    four_slots(model.pk)
    task_id = submit(client_for(charlie), "STAT: troponin 2.3?", "critical")
    flood = flood_elsewhere(model.pk, 40)
    assert drain() == [task_id]
    assert queue.run_task(task_id) == "completed"
    log = stub_log(slow_stub)
    assert flood.poll() is None
    [arrived] = arrivals
    assert low_started_before(log, arrived, "STAT: troponin 2.3?") <= 4
    assert InferenceTask.objects.get(id=task_id).status == "completed"
    flood.wait(60)


async def test_a_release_frees_the_slot_for_an_urgent_request_waiting_in_another_process(fresh_view, monkeypatch):
    monkeypatch.setattr(slots, "RECHECK_SECONDS", 3600.0)  # only releases move this process's waiters
    publish_decision([reading(60)], [ModelInfo(EP, f"model-{EP}", 1, 0, None)], wait_seconds=30)  # 2 slots, none kept
    backend = Backend()
    flood = [asyncio.create_task(request(backend, f"low-{i}", LOW, FLOODING)) for i in range(4)]
    await until(lambda: len(backend.running()) == 2 and slots.waiting(EP) == 2)
    other = "elsewhere:1:abc"  # what another process publishes while a CRITICAL request waits there
    shared.client().hset(
        shared.key("inflight"),
        other,
        json.dumps({"ts": time.time(), "counts": {}, "urgent": {str(EP): CRITICAL}}),
    )
    slots._fresh_remote = None  # read it at the next release, not from an earlier read
    backend.finish("low-0")
    await until(lambda: "end low-0" in backend.log and slots.local_in_flight().get(EP) == 1)
    assert backend.running() == ["low-1"] and slots.waiting(EP) == 2  # freed, not handed to low-2
    shared.client().hdel(shared.key("inflight"), other)  # it was served elsewhere
    slots._fresh_remote = None
    backend.finish("low-1")  # with nobody urgent elsewhere, releases hand over again
    await until(lambda: len(backend.running()) == 1 and "start low-2" in backend.log)
    for i in range(4):
        backend.finish(f"low-{i}")
    await asyncio.gather(*flood)


@pytest.mark.django_db(transaction=True)
def test_with_no_slot_kept_a_critical_request_still_starts_within_one_turn_of_another_processs_flood(
    live_medai, slow_stub, flood_elsewhere, arrivals, charlie, token_for, fresh_view
):
    model = register_model("flooded", slow_stub)
    publish_decision([reading(60)], [ModelInfo(model.pk, "flooded", 1, 0, None)], wait_seconds=30)  # 2 slots
    assert policy.current_policy().reserved == 0
    flood = flood_elsewhere(model.pk, 30)  # ~15 turns of 2 slots
    answer = httpx.post(
        f"{live_medai}/v1/chat/completions",
        json={"model": "flooded", "priority": "critical", "messages": [{"role": "user", "content": "STAT: INR 9?"}]},
        headers={"Authorization": f"Bearer {token_for(charlie)}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    log = stub_log(slow_stub)
    assert flood.poll() is None
    [arrived] = arrivals
    assert low_started_before(log, arrived, "STAT: INR 9?") <= 2  # within one slot's turn (2 slots)
    flood.wait(60)
    assert flood.returncode == 0
