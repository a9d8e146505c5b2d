"""Rotating a key issues a new secret; the old one keeps working for the grace period, then 401."""

from __future__ import annotations

from datetime import timedelta

import pytest

from apps.accounts.apikeys import ApiKeyError
from apps.accounts.services import create_api_key, rotate_api_key
from apps.audit.models import AuditEvent
from tests.accounts.conftest import me

pytestmark = pytest.mark.django_db


def test_the_old_secret_works_until_the_grace_ends_then_answers_401(alice, demo, admin_user, later):
    key, old = create_api_key(alice, name="ehr", location=demo, scopes=["chat", "read"])
    new_key, new = rotate_api_key(key, actor=admin_user, grace_hours=2)
    assert me(old) == 200 and me(new) == 200
    later(timedelta(hours=1, minutes=59))
    assert me(old) == 200
    later(timedelta(minutes=2))
    assert me(old) == 401
    assert me(new) == 200
    assert new_key.scopes == ["chat", "read"] and new_key.location == demo


def test_the_default_grace_is_the_configured_one(alice, demo, settings, later):
    settings.MEDAI_API_KEY_ROTATION_GRACE_HOURS = 6
    key, old = create_api_key(alice, name="ehr", location=demo)
    rotate_api_key(key)
    later(timedelta(hours=5))
    assert me(old) == 200
    later(timedelta(hours=2))
    assert me(old) == 401


def test_a_grace_never_extends_the_old_key_past_its_own_expiry(alice, demo, later):
    from django.utils import timezone

    key, old = create_api_key(alice, name="ehr", location=demo, expires_at=timezone.now() + timedelta(hours=1))
    rotate_api_key(key, grace_hours=24)
    later(timedelta(hours=2))
    assert me(old) == 401


def test_a_key_is_rotated_once_and_the_rotation_is_audited(alice, demo, admin_user):
    key, _ = create_api_key(alice, name="ehr", location=demo)
    new_key, _ = rotate_api_key(key, actor=admin_user)
    with pytest.raises(ApiKeyError, match="already rotated"):
        rotate_api_key(key)
    event = AuditEvent.objects.get(action="apikey.rotate")
    assert event.details["old_prefix"] == key.prefix and event.details["new_prefix"] == new_key.prefix
    assert event.details["grace_hours"] == 24


def test_a_revoked_key_cannot_be_rotated(alice, demo):
    from apps.accounts.services import revoke_api_key

    key, _ = create_api_key(alice, name="ehr", location=demo)
    revoke_api_key(key)
    with pytest.raises(ApiKeyError, match="revoked"):
        rotate_api_key(key)
