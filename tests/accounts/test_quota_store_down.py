"""The counter store (Redis) unreachable: requests are refused with 503 (fail closed, the default),
or served unmetered for an organization that chose to fail open; settling never raises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.accounts import governance
from apps.accounts.governance import Item, store

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_down(settings) -> Iterator[None]:
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    store.reset_client()
    governance._fail_open.clear()
    yield
    store.reset_client()


def test_requests_are_refused_with_503_by_default(alice, principal_of, redis_down):
    with pytest.raises(governance.Unavailable) as refused:
        governance.admit(principal_of(alice), items=[Item(1, 1)])
    assert refused.value.status == 503 and refused.value.code == "quota_store_unavailable"


def test_an_organization_that_fails_open_is_served_unmetered(alice, org, principal_of, redis_down):
    org.quota_fail_open = True
    org.save()
    admitted = governance.admit(principal_of(alice), items=[Item(1, 1)], in_flight=True)
    assert admitted.rate_limit.headers == {} and admitted.reservations[0].hold == ""
    governance.reconcile(admitted.reservations[0], prompt_tokens=1, completion_tokens=1, completed=True)


def test_the_setting_can_make_every_organization_fail_open(alice, principal_of, redis_down, settings):
    settings.MEDAI_GOVERNANCE_FAIL_OPEN = True
    governance.admit(principal_of(alice), items=[Item(1, 1)])


def test_settling_while_redis_is_down_does_not_raise(alice, principal_of, quota, settings):
    quota(location="demo", period="day", requests=5)
    [r] = governance.admit(principal_of(alice), items=[Item(1, 1)], in_flight=True).reservations
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    store.reset_client()
    try:
        governance.reconcile(r, prompt_tokens=1, completion_tokens=1, completed=True)  # logged, not raised
    finally:
        store.reset_client()
