"""Fair shares in a model's line: among requests of one priority waiting for a slot, locations take
turns (round-robin), so one location's flood does not make another's request wait behind all of
it; within a location, first come first served; between priorities, strict order as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from apps.gpu import slots
from apps.gpu.policy import ModelInfo
from apps.inference.dispatch import call_with_failover
from apps.inference.router import EndpointInfo
from tests.gpu.conftest import publish_decision, reading

EP = 4713
NORMAL, HIGH = 1, 2
NORTH, SOUTH, EAST = 11, 12, 13  # locations


@pytest.fixture
def fresh_view(settings):
    """Every read of the GPU state goes to Redis, so the test sees the decision it published."""
    settings.MEDAI_GPU_STATE_CACHE_SECONDS = 0.0


def endpoint() -> EndpointInfo:
    return EndpointInfo(
        id=EP,
        name="shared-model",
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


async def until(check: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


class Line:
    """Requests joining the line one after the other, served one at a time (one slot)."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def join(self, name: str, priority: int, location: int) -> None:
        async def answer(ep: EndpointInfo) -> str:
            self.order.append(name)
            return name

        async def request() -> None:
            _, _, lease = await call_with_failover([endpoint()], answer, priority=priority, location=location)
            await asyncio.sleep(0)
            lease.release()

        waiting = slots.waiting(EP)
        self.tasks.append(asyncio.create_task(request()))
        await until(lambda: slots.waiting(EP) > waiting)

    async def done(self) -> None:
        await asyncio.gather(*self.tasks)


def one_slot() -> slots.Lease:
    publish_decision([reading(75)], [ModelInfo(EP, "shared-model", 1, 0, None)], wait_seconds=30)
    held = slots.try_acquire(EP, 1)
    assert held is not None
    return held


async def test_a_request_from_another_location_goes_ahead_of_a_waiting_flood(fresh_view):
    held = one_slot()
    line = Line()
    for i in range(6):
        await line.join(f"north-{i}", NORMAL, NORTH)
    await line.join("south-0", NORMAL, SOUTH)
    await line.join("south-1", NORMAL, SOUTH)
    held.release()
    await line.done()
    assert line.order == ["north-0", "south-0", "north-1", "south-1", "north-2", "north-3", "north-4", "north-5"]


async def test_three_locations_take_turns_each_in_its_own_arrival_order(fresh_view):
    held = one_slot()
    line = Line()
    for i in range(3):
        await line.join(f"north-{i}", NORMAL, NORTH)
    for i in range(2):
        await line.join(f"south-{i}", NORMAL, SOUTH)
    await line.join("east-0", NORMAL, EAST)
    held.release()
    await line.done()
    assert line.order == ["north-0", "south-0", "east-0", "north-1", "south-1", "north-2"]


async def test_priority_still_comes_before_the_turns_of_locations(fresh_view):
    held = one_slot()
    line = Line()
    for i in range(3):
        await line.join(f"north-{i}", NORMAL, NORTH)
    await line.join("south-normal", NORMAL, SOUTH)
    await line.join("north-high", HIGH, NORTH)
    held.release()
    await line.done()
    assert line.order == ["north-high", "north-0", "south-normal", "north-1", "north-2"]


async def test_a_location_served_alone_before_is_not_sent_to_the_back_later(fresh_view):
    publish_decision([reading(75)], [ModelInfo(EP, "shared-model", 1, 0, None)], wait_seconds=30)
    for _ in range(5):  # south alone: served at once, five turns
        _, _, lease = await call_with_failover(
            [endpoint()], lambda ep: asyncio.sleep(0), priority=NORMAL, location=SOUTH
        )
        lease.release()
    held = slots.try_acquire(EP, 1)
    assert held is not None
    line = Line()
    for i in range(3):
        await line.join(f"north-{i}", NORMAL, NORTH)
    await line.join("south-0", NORMAL, SOUTH)
    held.release()
    await line.done()
    # south's five past turns, when nobody else wanted the slot, do not count against it now
    assert line.order == ["north-0", "south-0", "north-1", "north-2"]
