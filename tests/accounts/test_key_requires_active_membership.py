"""An API key works only while its user is active, still a member of the key's location, and the
location is active; what ends it stays ended (removal and deactivation revoke the keys)."""

from __future__ import annotations

import pytest

from apps.accounts.models import ApiKey
from tests.accounts.conftest import me

pytestmark = pytest.mark.django_db


def test_a_key_answers_while_its_user_works_at_its_location(alice, api_key_for):
    assert me(api_key_for(alice)) == 200


def test_removing_the_user_from_the_location_ends_the_key_even_when_cached(alice, demo, api_key_for):
    secret = api_key_for(alice)
    assert me(secret) == 200  # cached now
    alice.locations.remove(demo)
    assert me(secret) == 401


def test_removing_from_the_location_side_ends_the_key_too(alice, demo, api_key_for):
    secret = api_key_for(alice)
    assert me(secret) == 200
    demo.users.remove(alice)
    assert me(secret) == 401


def test_clearing_the_user_s_locations_ends_the_key(alice, api_key_for):
    secret = api_key_for(alice)
    assert me(secret) == 200
    alice.locations.clear()
    assert me(secret) == 401


def test_a_removed_member_s_key_is_revoked_and_stays_so_when_re_added(alice, demo, api_key_for):
    secret = api_key_for(alice)
    alice.locations.remove(demo)
    key = ApiKey.objects.get()
    assert key.revoked_at is not None and key.state == "revoked"
    alice.locations.add(demo)
    assert me(secret) == 401


def test_an_inactive_location_ends_its_keys_while_it_is_inactive(alice, demo, api_key_for):
    secret = api_key_for(alice)
    assert me(secret) == 200
    demo.is_active = False
    demo.save()
    assert me(secret) == 401
    demo.is_active = True
    demo.save()
    assert me(secret) == 200


def test_another_member_s_key_is_untouched_by_a_removal(alice, bob, demo, api_key_for):
    bobs = api_key_for(bob)
    alice.locations.remove(demo)
    assert me(bobs) == 200


def test_a_deactivated_user_s_keys_are_revoked_and_stay_so_on_reactivation(alice, api_key_for):
    secret = api_key_for(alice)
    assert me(secret) == 200
    alice.is_active = False
    alice.save()
    assert me(secret) == 401
    alice.is_active = True
    alice.save()
    assert me(secret) == 401
    assert ApiKey.objects.get().revoked_at is not None
