"""Admins set quotas and a key's own rate limits in the Django admin; the quota list shows what
the current window used; a change reaches the request path (Redis) on commit."""

from __future__ import annotations

import pytest

from apps.accounts import governance
from apps.accounts.governance import Item
from apps.accounts.models import ApiKey, Quota

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_quota_added_in_admin_limits_the_next_request(admin_client, alice, demo, principal_of):
    response = admin_client.post(
        "/admin/accounts/quota/add/", {"location": demo.pk, "period": "day", "max_requests": "1", "max_tokens": ""}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    p = principal_of(alice)
    governance.admit(p, items=[Item(1, 1)])
    with pytest.raises(governance.LimitExceeded, match="location 'demo'"):
        governance.admit(p, items=[Item(1, 1)])


def test_the_quota_list_shows_the_current_windows_usage(admin_client, alice, demo, principal_of):
    Quota.objects.create(location=demo, period="day", max_requests=100, max_tokens=5000)
    [r] = governance.admit(principal_of(alice), items=[Item(10, 10)]).reservations
    governance.reconcile(r, prompt_tokens=11, completion_tokens=22, completed=True)
    page = admin_client.get("/admin/accounts/quota/").content.decode()
    assert "location &#x27;demo&#x27;" in page
    # what was used, and its share of the limit (apps/audit/display.py)
    assert '<td class="field-requests_used">1 (1.0\u00a0%)</td>' in page
    assert '<td class="field-tokens_used">33 (0.7\u00a0%)</td>' in page


def test_a_quota_for_both_an_organization_and_a_location_is_refused(admin_client, demo, org):
    response = admin_client.post(
        "/admin/accounts/quota/add/",
        {"organization": org.pk, "location": demo.pk, "period": "day", "max_requests": "1"},
    )
    assert response.status_code == 200
    assert "for an organization or for a location, not both" in response.content.decode()


def test_a_keys_own_burst_set_in_admin_overrides_the_default(admin_client, alice, api_key_for):
    from apps.accounts.services import authenticate_header

    secret = api_key_for(alice)
    key = ApiKey.objects.get()
    response = admin_client.post(
        "/admin/accounts/apikeylimit/add/", {"api_key": key.pk, "rate": "0.001", "burst": "2", "max_in_flight": ""}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    p = authenticate_header(f"Bearer {secret}")
    for _ in range(2):
        governance.check_rate_limit(p)
    with pytest.raises(governance.LimitExceeded, match="API key"):
        governance.check_rate_limit(p)
