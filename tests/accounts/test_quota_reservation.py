"""Quota reservation (apps/accounts/governance/): requests and tokens are held before the backend
call and the real usage replaces the hold, exactly once; a hold nobody settles is released when its
lease ends; an organization's quota covers all its locations; a refusal names the quota."""

from __future__ import annotations

import time

import pytest

from apps.accounts import governance
from apps.accounts.governance import Item, quotas, store


def _used(scope: str, period: str = "day") -> dict[str, int]:
    return store.usage(scope)[period]


def test_a_location_quota_of_n_requests_admits_n_then_refuses_naming_the_quota(alice, demo, principal_of, quota):
    quota(location="demo", period="day", requests=3)
    p = principal_of(alice)
    held = [governance.admit(p, items=[Item(10, 5)]).reservations[0] for _ in range(3)]
    with pytest.raises(governance.LimitExceeded) as refused:
        governance.admit(p, items=[Item(10, 5)])
    assert refused.value.code == "quota_exceeded"
    assert "daily requests quota of location 'demo'" in refused.value.message
    assert 0 < refused.value.retry_after <= 86_400 + 3600  # until the day's window ends
    assert _used(f"l:{demo.pk}")["requests"] == 3
    for r in held:
        governance.reconcile(r, prompt_tokens=4, completion_tokens=2, completed=True)
    assert _used(f"l:{demo.pk}") == {"requests": 3, "tokens": 18}


def test_the_hold_is_the_prompt_estimate_plus_max_tokens_until_the_real_usage_replaces_it(
    alice, demo, principal_of, quota
):
    quota(location="demo", period="month", tokens=10_000)
    p = principal_of(alice)
    req = {"messages": [{"role": "user", "content": "How much paracetamol for an adult?"}], "max_tokens": 100}
    [reservation] = governance.admit(p, items=[governance.item_of(req)]).reservations
    estimate = governance.estimate_prompt_tokens(req)
    assert estimate > len("How much paracetamol for an adult?")  # an upper bound of the prompt's tokens
    assert _used(f"l:{demo.pk}", "month")["tokens"] == estimate + 100
    assert reservation.completion_cap == 100  # a token quota applies: the completion is capped
    governance.reconcile(reservation, prompt_tokens=9, completion_tokens=3, completed=True)
    assert _used(f"l:{demo.pk}", "month") == {"requests": 1, "tokens": 12}


def test_settling_twice_charges_once(alice, demo, principal_of, quota):
    quota(location="demo", period="day", requests=10, tokens=10_000)
    [r] = governance.admit(principal_of(alice), items=[Item(10, 10)]).reservations
    for _ in range(2):
        governance.reconcile(r, prompt_tokens=5, completion_tokens=5, completed=True)
    assert _used(f"l:{demo.pk}") == {"requests": 1, "tokens": 10}


def test_a_request_that_never_reached_a_model_is_released_entirely(alice, demo, principal_of, quota):
    quota(location="demo", period="day", requests=1)
    p = principal_of(alice)
    [r] = governance.admit(p, items=[Item(10, 10)]).reservations
    governance.reconcile(r, prompt_tokens=0, completion_tokens=0, completed=False)
    assert _used(f"l:{demo.pk}") == {"requests": 0, "tokens": 0}
    governance.admit(p, items=[Item(10, 10)])  # the one request of the quota is still there


def test_a_hold_nobody_settles_is_released_when_its_lease_ends(alice, demo, principal_of, quota, settings):
    settings.MEDAI_QUOTA_LEASE_SECONDS = 0.5
    quota(location="demo", period="day", requests=1, tokens=1000)
    p = principal_of(alice)
    governance.admit(p, items=[Item(10, 10)])  # its process "dies": never reconciled
    with pytest.raises(governance.LimitExceeded):
        governance.admit(p, items=[Item(10, 10)])
    time.sleep(0.7)
    [late] = governance.admit(p, items=[Item(10, 10)]).reservations  # the script swept the expired hold
    assert _used(f"l:{demo.pk}") == {"requests": 1, "tokens": 20}
    governance.reconcile(late, prompt_tokens=3, completion_tokens=3, completed=True)
    assert _used(f"l:{demo.pk}") == {"requests": 1, "tokens": 6}


def test_a_settle_after_the_lease_ended_charges_the_real_usage(alice, demo, principal_of, quota, settings):
    settings.MEDAI_QUOTA_LEASE_SECONDS = 0.3
    quota(location="demo", period="day", requests=5)
    p = principal_of(alice)
    [slow] = governance.admit(p, items=[Item(10, 10)]).reservations
    time.sleep(0.5)
    governance.admit(p, items=[])  # any script sweeps the expired hold
    assert _used(f"l:{demo.pk}")["requests"] == 0
    governance.reconcile(slow, prompt_tokens=7, completion_tokens=1, completed=True)
    assert _used(f"l:{demo.pk}") == {"requests": 1, "tokens": 8}


def test_an_organization_quota_covers_every_location_of_it(alice, charlie, org, principal_of, quota):
    quota(organization=org.name, period="day", requests=2)
    governance.admit(principal_of(alice), items=[Item(1, 1)])
    governance.admit(principal_of(charlie), items=[Item(1, 1)])
    with pytest.raises(governance.LimitExceeded) as refused:
        governance.admit(principal_of(charlie), items=[Item(1, 1)])
    assert "organization 'Demo Hospital'" in refused.value.message


def test_a_refusal_takes_nothing(alice, demo, principal_of, quota):
    quota(location="demo", period="day", tokens=100)
    p = principal_of(alice)
    with pytest.raises(governance.LimitExceeded):
        governance.admit(p, items=[Item(50, 60)])  # 110 > 100
    assert _used(f"l:{demo.pk}") == {"requests": 0, "tokens": 0}
    governance.admit(p, items=[Item(50, 50)])


def test_quotas_lost_with_redis_are_published_again_by_the_next_request(alice, principal_of, quota):
    quota(location="demo", period="day", requests=1)
    store.client().delete(store.prefix() + "lim")  # a restarted Redis: no mirror
    p = principal_of(alice)
    governance.admit(p, items=[Item(1, 1)])
    with pytest.raises(governance.LimitExceeded):
        governance.admit(p, items=[Item(1, 1)])
    assert quotas.mirror() == store.client().hgetall(store.prefix() + "lim")
