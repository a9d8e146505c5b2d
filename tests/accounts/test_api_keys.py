"""API keys: shown once, stored as prefix + hash, scoped, expiring, revocable, rotatable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiKey, hash_secret
from apps.accounts.services import create_api_key, rotate_api_key
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def get_me(secret: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client.get("/v1/auth/me")


def test_only_the_prefix_and_a_hash_of_the_secret_are_stored(alice, demo):
    key, secret = create_api_key(alice, name="ehr", location=demo)
    assert secret.startswith(key.prefix + "_")
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert secret not in {str(v) for v in row.values()}
    assert row["hashed_secret"] == hash_secret(secret)
    assert AuditEvent.objects.filter(action="apikey.create", object_id=str(key.pk)).exists()


def test_key_acts_as_its_user_at_its_location_and_records_last_use(alice, demo):
    key, secret = create_api_key(alice, name="ehr", location=demo)
    response = get_me(secret)
    assert response.status_code == 200
    assert response.json() == {
        "id": alice.pk,
        "username": "alice",
        "role": "clinician",
        "location_id": "demo",
        "scopes": ["chat", "gpu:read", "read", "submit"],
        "auth": "api_key",
    }
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_default_expiry_is_90_days(alice, demo):
    key, _ = create_api_key(alice, name="ehr", location=demo)
    assert timedelta(days=89) < key.expires_at - timezone.now() <= timedelta(days=90)


def test_a_key_cannot_be_bound_to_a_location_the_user_does_not_work_at(alice, north):
    with pytest.raises(ValueError, match="does not work at north"):
        create_api_key(alice, name="x", location=north)


def test_a_key_cannot_carry_scopes_beyond_the_role(alice, demo):
    with pytest.raises(ValueError, match="audit:read"):
        create_api_key(alice, name="x", location=demo, scopes=["audit:read"])


def test_rotation_without_grace_revokes_the_old_secret_and_issues_a_working_new_one(alice, demo, admin_user):
    key, old_secret = create_api_key(alice, name="ehr", location=demo, scopes=["read"])
    new_key, new_secret = rotate_api_key(key, actor=admin_user, grace_hours=0)
    assert get_me(old_secret).status_code == 401
    assert get_me(new_secret).status_code == 200
    assert new_key.scopes == ["read"] and new_key.location == demo
    key.refresh_from_db()
    assert key.replaced_by == new_key and key.revoked_at is not None


def test_deactivated_user_key_stops_working(alice, demo):
    _, secret = create_api_key(alice, name="ehr", location=demo)
    alice.is_active = False
    alice.save()
    assert get_me(secret).status_code == 401
