"""On an event loop, a request's settle rides on the loop's next admission (one script, one round
trip: SETTLE's work, then ADMIT's), or is sent by its own task with the others queued meanwhile
when no admission comes first. Either way it is applied once, before any later admission of the
process; the scripts' packed arguments cannot be shifted by a separator in a client's IP."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from apps.accounts import governance
from apps.accounts.governance import Item, store

pytestmark = pytest.mark.django_db


def _used(principal) -> dict[str, int]:
    return store.usage(f"l:{principal.location_pk}")["day"]


@pytest.fixture
def scripts(monkeypatch) -> Counter[str]:
    """The governance scripts sent from an event loop, by name."""
    sent: Counter[str] = Counter()
    real = store.async_script

    def counting(name: str) -> Any:
        sent[name] += 1
        return real(name)

    monkeypatch.setattr(store, "async_script", counting)
    return sent


async def _drain() -> None:
    deadline = time.monotonic() + 5
    while governance._pending:
        assert time.monotonic() < deadline, "a queued settle was never answered"
        await asyncio.sleep(0.005)


def test_the_next_admission_carries_the_settle_and_sees_the_slot_free(alice, principal_of, quota, settings, scripts):
    settings.MEDAI_INFLIGHT_PER_KEY = 1
    quota(location="demo", period="day", requests=10, tokens=100_000)
    p = principal_of(alice)

    async def sequential() -> None:
        for _ in range(3):  # one in flight at a time: each admission must see the last one settled
            admitted = await governance.admit_async(p, items=[Item(10, 20)], in_flight=True)
            governance.reconcile(admitted.reservations[0], prompt_tokens=3, completion_tokens=4, completed=True)
        await _drain()

    asyncio.run(sequential())
    assert scripts == Counter({"ADMIT": 1, "SETTLE_ADMIT": 2, "SETTLE": 1})  # the last settle alone
    assert _used(p) == {"requests": 3, "tokens": 21}  # real usage, charged once each
    assert store.client().zcard(f"{store.prefix()}f:u:{p.user_id}") == 0


def test_settles_queued_together_go_in_one_script(alice, principal_of, quota, scripts):
    quota(location="demo", period="day", requests=10, tokens=100_000)
    p = principal_of(alice)

    async def five_answers_at_once() -> None:
        admitted = [await governance.admit_async(p, items=[Item(10, 20)], in_flight=True) for _ in range(5)]
        await _drain()
        scripts.clear()
        for a in admitted:
            governance.reconcile(a.reservations[0], prompt_tokens=1, completion_tokens=1, completed=True)
        await _drain()

    asyncio.run(five_answers_at_once())
    assert scripts == Counter({"SETTLE": 1})
    assert _used(p) == {"requests": 5, "tokens": 10}


def test_a_released_hold_is_free_for_the_admission_that_carries_its_settle(alice, principal_of, quota):
    quota(location="demo", period="day", requests=1)
    p = principal_of(alice)

    async def run() -> governance.LimitExceeded:
        first = await governance.admit_async(p, items=[Item(1, 1)], in_flight=True)
        governance.reconcile(first.reservations[0], prompt_tokens=0, completion_tokens=0, completed=False)
        second = await governance.admit_async(p, items=[Item(1, 1)], in_flight=True)  # the released one: free
        governance.reconcile(second.reservations[0], prompt_tokens=1, completion_tokens=1, completed=True)
        with pytest.raises(governance.LimitExceeded) as refused:  # the settle it carried is applied, once
            await governance.admit_async(p, items=[Item(1, 1)], in_flight=True)
        await _drain()
        return refused.value

    assert asyncio.run(run()).code == "quota_exceeded"
    assert _used(p) == {"requests": 1, "tokens": 2}


def test_a_separator_in_the_ip_cannot_shift_the_arguments(alice, principal_of, quota):
    quota(location="demo", period="day", requests=5)
    p = principal_of(alice)
    hostile = "10.0.0.1" + store.SEPARATOR + "0"
    admitted = asyncio.run(governance.admit_async(p, items=[Item(1, 1)], ip=hostile, in_flight=True))
    assert admitted.reservations[0].hold and _used(p)["requests"] == 1
    assert store.client().exists(f"{store.prefix()}b:i:10.0.0.1?0")
    with pytest.raises(store.Unpackable):
        store.pack(["a" + store.SEPARATOR, "b"])
