"""A key that authenticated recently is served from the per-process cache; revoking drops it."""

from __future__ import annotations

import pytest

from apps.accounts.services import AuthError, authenticate_bearer, create_api_key, revoke_api_key

pytestmark = pytest.mark.django_db


def test_repeated_use_of_a_key_costs_no_query(alice, demo, django_assert_num_queries):
    key, secret = create_api_key(alice, name="ehr", location=demo)
    authenticate_bearer(secret)  # loads the key and records its last use
    with django_assert_num_queries(0):
        user, principal = authenticate_bearer(secret)
    assert (user, principal.api_key_id, principal.location_code) == (alice, key.pk, "demo")


def test_revoking_a_cached_key_takes_effect_at_once(alice, demo):
    key, secret = create_api_key(alice, name="ehr", location=demo)
    authenticate_bearer(secret)
    revoke_api_key(key)
    with pytest.raises(AuthError):
        authenticate_bearer(secret)
