"""Admins create, revoke and rotate API keys in the Django admin; the secret is shown once."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.utils import timezone

from apps.accounts.models import ApiKey, hash_secret

pytestmark = pytest.mark.django_db


def test_creating_a_key_in_admin_shows_its_secret_once(admin_client, alice, demo):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {
            "user": alice.pk,
            "location": demo.pk,
            "name": "lab system",
            "scopes": ["chat"],
        },
        follow=True,
    )
    assert response.status_code == 200
    text = " ".join(str(m) for m in get_messages(response.wsgi_request))
    match = re.search(r"<code>(mk_[0-9a-f]{8}_[A-Za-z0-9_-]+)</code>", text)
    assert match, text
    key = ApiKey.objects.get()
    assert key.hashed_secret == hash_secret(match.group(1))
    assert key.scopes == ["chat"]
    change_page = admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert match.group(1) not in change_page and key.prefix in change_page


def test_admin_rejects_a_location_the_user_does_not_work_at(admin_client, alice, north):
    response = admin_client.post("/admin/accounts/apikey/add/", {"user": alice.pk, "location": north.pk, "name": "x"})
    assert response.status_code == 200
    assert "does not work at north" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_admin_revoke_and_rotate_actions(admin_client, alice, demo):
    from apps.accounts.services import create_api_key

    first, _ = create_api_key(alice, name="a", location=demo)
    second, _ = create_api_key(alice, name="b", location=demo)
    admin_client.post("/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [first.pk]})
    first.refresh_from_db()
    assert first.revoked_at is not None
    response = admin_client.post(
        "/admin/accounts/apikey/", {"action": "rotate_keys", "_selected_action": [second.pk]}, follow=True
    )
    assert "will not be shown again" in " ".join(str(m) for m in get_messages(response.wsgi_request))
    second.refresh_from_db()
    assert second.replaced_by is not None and second.revoked_at is None  # the grace period
    assert second.expires_at <= timezone.now() + timedelta(hours=settings.MEDAI_API_KEY_ROTATION_GRACE_HOURS)
