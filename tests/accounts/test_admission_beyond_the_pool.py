"""More admissions in flight on one event loop than its Redis client has connections: they wait
for a connection and are all decided (admitted or refused by a limit), never answered 503
``quota_store_unavailable``. redis-py's pool refuses a command past its size (100 by default)
with ``MaxConnectionsError``, a ``ConnectionError``: that is a full pool, not a Redis that is down.
(The rate-limit test across processes met it: 100 requests at once on one web process.)"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from apps.accounts import governance
from apps.accounts.governance import Item, store

pytestmark = pytest.mark.django_db

AT_ONCE = 250  # well past redis-py's default pool of 100 and medai's MEDAI_REDIS_MAX_CONNECTIONS


async def _drain() -> None:
    for _ in range(1000):
        if not governance._pending:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("a queued settle was never answered")


def test_admissions_past_the_pool_size_wait_for_a_connection(alice, principal_of, quota, settings):
    settings.MEDAI_INFLIGHT_PER_KEY = 0
    settings.MEDAI_RATE_LIMIT_USER_RATE = 0  # no bucket: only the quota decides
    settings.MEDAI_RATE_LIMIT_IP_RATE = 0
    quota(location="demo", period="day", requests=AT_ONCE - 50, tokens=10_000_000)
    p = principal_of(alice)

    async def burst() -> tuple[Counter[str], int]:
        async def one() -> str:
            try:
                admitted = await governance.admit_async(p, items=[Item(5, 5)], in_flight=True)
            except governance.LimitExceeded as exc:
                return exc.code
            governance.reconcile(admitted.reservations[0], prompt_tokens=1, completion_tokens=1, completed=True)
            return "admitted"

        first = Counter(await asyncio.gather(*(one() for _ in range(AT_ONCE))))
        # and again at once, now with every settle of the first burst queued on this loop
        second = Counter(await asyncio.gather(*(one() for _ in range(AT_ONCE))))
        await _drain()
        pool = store.async_pool()
        return first + second, pool.max_connections

    codes, pool_size = asyncio.run(burst())
    assert pool_size < AT_ONCE  # the burst really is larger than the pool
    assert codes == Counter({"admitted": AT_ONCE - 50, "quota_exceeded": AT_ONCE + 50})
    assert store.usage(f"l:{p.location_pk}")["day"] == {"requests": AT_ONCE - 50, "tokens": 2 * (AT_ONCE - 50)}


def test_a_full_pool_is_not_a_store_outage_in_threads_either(alice, principal_of, quota, settings):
    """The blocking client's pool, under more threads than connections: each admission waits."""
    from concurrent.futures import ThreadPoolExecutor

    settings.MEDAI_RATE_LIMIT_USER_RATE = 0
    settings.MEDAI_RATE_LIMIT_IP_RATE = 0
    settings.MEDAI_REDIS_MAX_CONNECTIONS = 4
    store.reset_client()
    try:
        quota(location="demo", period="day", requests=1000)
        p = principal_of(alice)

        def one(_: int) -> str:
            try:
                governance.admit(p, items=[Item(1, 1)])
            except governance.LimitExceeded as exc:
                return exc.code
            return "admitted"

        with ThreadPoolExecutor(24) as pool:
            codes = Counter(pool.map(one, range(200)))
        assert codes == Counter({"admitted": 200})
        assert store.client().connection_pool.max_connections == 4
    finally:
        store.reset_client()
