"""The admission awaited on an event loop (sync chat, websockets: ``admit_async``) decides as the
blocking one does, fails closed or open as the organization chose when Redis is down, and a caller
cancelled while Redis answers (the client went away) leaves no slot and no hold behind."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from apps.accounts import governance
from apps.accounts.governance import Item, store

pytestmark = pytest.mark.django_db


def _held(principal) -> int:
    return store.usage(f"l:{principal.location_pk}")["day"]["requests"]


def test_a_quota_admits_exactly_its_requests_then_429_with_retry_after(alice, principal_of, quota):
    quota(location="demo", period="day", requests=2)
    p = principal_of(alice)

    async def three() -> list[governance.Admitted | governance.LimitExceeded]:
        out: list[governance.Admitted | governance.LimitExceeded] = []
        for _ in range(3):
            try:
                out.append(await governance.admit_async(p, items=[Item(1, 1)], in_flight=True))
            except governance.LimitExceeded as exc:
                out.append(exc)
        return out

    first, second, third = asyncio.run(three())
    assert isinstance(first, governance.Admitted) and isinstance(second, governance.Admitted)
    assert isinstance(third, governance.LimitExceeded) and third.code == "quota_exceeded" and third.retry_after >= 1
    assert first.rate_limit.headers["X-RateLimit-Limit"] and _held(p) == 2


def test_a_cancelled_admission_gives_back_its_slot_and_hold(alice, principal_of, quota):
    quota(location="demo", period="day", requests=5)
    p = principal_of(alice)
    flight = f"{store.prefix()}f:u:{p.user_id}"

    async def cancelled() -> None:
        task = asyncio.create_task(governance.admit_async(p, items=[Item(1, 1)], in_flight=True))
        await asyncio.sleep(0)  # the script is sent; its caller goes away before the answer
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 5
        while store.client().exists(f"{store.prefix()}b:u:{p.user_id}") == 0 or governance._pending:
            assert time.monotonic() < deadline, "the admission never ran, or its release never answered"
            await asyncio.sleep(0.01)

    asyncio.run(cancelled())
    assert store.client().zcard(flight) == 0 and _held(p) == 0


@pytest.fixture
def redis_down(settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    store.reset_client()
    governance._fail_open.clear()
    yield
    store.reset_client()
    governance._fail_open.clear()


def test_redis_down_refuses_with_503_by_default(alice, principal_of, redis_down):
    with pytest.raises(governance.Unavailable) as refused:
        asyncio.run(governance.admit_async(principal_of(alice), items=[Item(1, 1)], in_flight=True))
    assert refused.value.status == 503


@pytest.mark.django_db(transaction=True)
def test_redis_down_serves_a_fail_open_organization_as_its_row_says(alice, org, principal_of, redis_down):
    org.quota_fail_open = True
    org.save()
    admitted = asyncio.run(governance.admit_async(principal_of(alice), items=[Item(1, 1)], in_flight=True))
    assert admitted.reservations[0].hold == "" and admitted.rate_limit.headers == {}
