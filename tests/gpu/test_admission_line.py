"""A request that finds every slot of its models busy waits in a line: CRITICAL first, first come
first served within a level, a released slot handed straight to the head; 429 with an estimated
Retry-After only when the wait runs out or the line is full."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types
from collections.abc import Callable

import httpx
import pytest

from apps.gpu import shared, slots
from apps.gpu.policy import ModelInfo
from apps.inference import dispatch
from apps.inference.dispatch import NoBackend, call_with_failover
from apps.inference.router import EndpointInfo
from tests.conftest import records_written, register_model
from tests.gpu.conftest import publish_decision, reading
from tests.support.servers import set_stub_mode

EP = 4711
LOW, NORMAL, HIGH, CRITICAL = 0, 1, 2, 3
MSG = [{"role": "user", "content": "Is 5 mg of warfarin a usual dose?"}]


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


def one_at_a_time(pk: int = EP, **override: object) -> None:
    """HIGH memory pressure: one request in flight per model."""
    publish_decision([reading(75)], [ModelInfo(pk, f"model-{pk}", 1, 0, None)], **override)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def answer(ep: EndpointInfo) -> dict[str, str]:
    return {"served_by": ep.name}


class Line:
    """Requests started one after the other (each in line before the next starts), served in
    whatever order admission hands out the one slot."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.errors: dict[str, NoBackend] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def join(self, name: str, priority: int, settled: Callable[[], bool] | None = None) -> None:
        async def request() -> None:
            try:
                _, _, lease = await call_with_failover([endpoint()], answer, priority=priority)
            except NoBackend as exc:
                self.errors[name] = exc
                return
            self.order.append(name)
            await asyncio.sleep(0)
            lease.release()

        waiting = slots.waiting(EP)
        self.tasks.append(asyncio.create_task(request()))
        await until(settled or (lambda: slots.waiting(EP) > waiting or name in self.errors or name in self.order))

    async def done(self) -> None:
        await asyncio.gather(*self.tasks)


async def test_a_critical_request_is_served_before_normal_ones_that_queued_earlier(fresh_view):
    one_at_a_time(wait_seconds=30)
    held = slots.try_acquire(EP, 1)
    line = Line()
    for name, priority in [
        ("normal-1", NORMAL),
        ("low", LOW),
        ("normal-2", NORMAL),
        ("critical", CRITICAL),
        ("high", HIGH),
    ]:
        await line.join(name, priority)
    held.release()
    await line.done()
    assert line.order == ["critical", "high", "normal-1", "normal-2", "low"]


async def test_requests_of_one_level_are_served_first_come_first_served(fresh_view):
    one_at_a_time(wait_seconds=30)
    held = slots.try_acquire(EP, 1)
    line = Line()
    for i in range(6):
        await line.join(f"normal-{i}", NORMAL)
    held.release()
    await line.done()
    assert line.order == [f"normal-{i}" for i in range(6)]


async def test_a_released_slot_goes_to_the_head_of_the_line_not_to_a_newcomer(fresh_view):
    one_at_a_time(wait_seconds=30)
    held = slots.try_acquire(EP, 1)
    line = Line()
    await line.join("waiting", NORMAL)
    held.release()
    assert slots.try_acquire(EP, 1, key=(-CRITICAL, slots.new_ticket())) is None  # handed over already
    await line.done()
    assert line.order == ["waiting"]


async def test_a_full_line_answers_429_with_an_estimated_retry_after(fresh_view, settings):
    settings.MEDAI_ADMISSION_QUEUE_MAX = 2
    one_at_a_time(wait_seconds=30)
    held = slots.try_acquire(EP, 1)
    line = Line()
    await line.join("first", NORMAL)
    await line.join("second", NORMAL)
    await line.join("third", NORMAL)  # no room: answered at once
    error = line.errors["third"]
    assert (error.status_code, error.code) == (429, "model_busy")
    assert "2 requests already wait" in error.message
    assert error.retry_after >= 1
    held.release()
    await line.done()
    assert line.order == ["first", "second"]


async def test_a_critical_request_takes_the_place_of_the_last_normal_one_in_a_full_line(fresh_view, settings):
    settings.MEDAI_ADMISSION_QUEUE_MAX = 2
    one_at_a_time(wait_seconds=30)
    held = slots.try_acquire(EP, 1)
    line = Line()
    await line.join("first", NORMAL)
    await line.join("second", NORMAL)
    await line.join("critical", CRITICAL, settled=lambda: "second" in line.errors)
    assert line.errors["second"].status_code == 429
    held.release()
    await line.done()
    assert line.order == ["critical", "first"]


async def test_a_wait_that_runs_out_answers_429_with_retry_after(fresh_view):
    one_at_a_time(wait_seconds=0.05)
    held = slots.try_acquire(EP, 1)
    with pytest.raises(NoBackend) as caught:
        await call_with_failover([endpoint()], answer, priority=NORMAL)
    held.release()
    assert (caught.value.status_code, caught.value.code) == (429, "model_busy")
    assert caught.value.retry_after >= 1


def test_retry_after_is_the_line_ahead_times_how_long_the_models_slots_are_held(fresh_view, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(
        slots, "time", types.SimpleNamespace(monotonic=lambda: now[0], time=time.time, sleep=time.sleep)
    )
    lease = slots.try_acquire(EP, 2)
    now[0] += 8.0
    lease.release()  # slots of this model are held 8 s
    assert slots.retry_after([EP], ahead=0, limit=2) == 8
    assert slots.retry_after([EP], ahead=5, limit=2) == 24  # 6 requests, 2 at a time: 3 rounds of 8 s


async def test_a_release_in_another_process_wakes_the_waiter(fresh_view, monkeypatch):
    monkeypatch.setattr(slots, "RECHECK_SECONDS", 3600.0)  # only the announcement can wake it
    one_at_a_time(wait_seconds=3600)
    other = "elsewhere:1:abc"
    shared.client().hset(shared.key("inflight"), other, json.dumps({"ts": time.time(), "counts": {str(EP): 1}}))
    shared.invalidate()
    task = asyncio.create_task(call_with_failover([endpoint()], answer, priority=NORMAL))
    await until(lambda: slots.waiting(EP) == 1)
    await until(
        lambda: slots._listener is not None and shared.client().pubsub_numsub(slots.release_channel())[0][1] > 0
    )
    # what the other process's publisher does when its request ends
    shared.client().hset(shared.key("inflight"), other, json.dumps({"ts": time.time(), "counts": {}}))
    shared.client().publish(slots.release_channel(), json.dumps({"pid": other, "freed": {str(EP): 1}}))
    ep, _, lease = await asyncio.wait_for(task, 10)
    lease.release()
    assert ep.id == EP


# --- over real HTTP --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_more_requests_than_slots_all_answer_200_even_after_a_long_wait(
    live_medai, stub_backend, alice, token_for, fresh_view, monkeypatch
):
    model = register_model("busy", stub_backend)
    publish_decision([reading(60)], [ModelInfo(model.pk, "busy", model.rank, 0, None)])  # NORMAL: 2 at a time
    monkeypatch.setattr(slots, "RECHECK_SECONDS", 0.01)  # waiters look at the clock often
    offset, looked = [0.0], [0]

    def monotonic() -> float:
        if offset[0]:
            looked[0] += 1
        return time.monotonic() + offset[0]

    monkeypatch.setattr(dispatch, "time", types.SimpleNamespace(monotonic=monotonic, perf_counter=time.perf_counter))
    set_stub_mode(stub_backend, "hold")
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    results: list[httpx.Response] = []

    def request() -> None:
        results.append(
            httpx.post(
                f"{live_medai}/v1/chat/completions",
                json={"model": "busy", "messages": MSG},
                headers=headers,
                timeout=60,
            )
        )

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    stats = stub_backend.removesuffix("/v1") + "/_stats"
    deadline = time.monotonic() + 30
    while not (httpx.get(stats).json()["in_flight"] == 2 and slots.waiting(model.pk) == 6):
        assert time.monotonic() < deadline, "the requests did not all reach the backend or the line"
        time.sleep(0.01)
    offset[0] = 40.0  # as if the backend had taken 40 s: longer than the old 10 s wait
    while looked[0] < 60 and sum(t.is_alive() for t in threads) > 2:  # every waiter has seen that clock
        assert time.monotonic() < deadline
        time.sleep(0.01)
    set_stub_mode(stub_backend, "ok")
    for t in threads:
        t.join(60)
    records_written()
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results if r.status_code != 200]
    assert httpx.get(stats).json()["max_in_flight"] == 2  # the limit held throughout


@pytest.mark.django_db(transaction=True)
def test_a_full_line_answers_429_with_a_retry_after_header(
    live_medai, stub_backend, alice, token_for, fresh_view, settings
):
    settings.MEDAI_ADMISSION_QUEUE_MAX = 1
    model = register_model("busy", stub_backend)
    one_at_a_time(model.pk)
    held = slots.try_acquire(model.pk, 1)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    first: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: first.append(
            httpx.post(
                f"{live_medai}/v1/chat/completions",
                json={"model": "busy", "messages": MSG},
                headers=headers,
                timeout=60,
            )
        )
    )
    waiter.start()
    deadline = time.monotonic() + 30
    while slots.waiting(model.pk) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    turned_away = httpx.post(
        f"{live_medai}/v1/chat/completions", json={"model": "busy", "messages": MSG}, headers=headers, timeout=60
    )
    held.release()
    waiter.join(60)
    records_written()
    assert turned_away.status_code == 429 and turned_away.json()["error"]["code"] == "model_busy"
    assert int(turned_away.headers["Retry-After"]) >= 1
    assert first[0].status_code == 200
