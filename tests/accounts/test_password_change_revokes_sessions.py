"""A password change or a deactivation ends every JWT of the user, in every session, refresh
tokens included. API keys survive a password change (they are not derived from it: an admin
minted them) and die with a deactivation."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from tests.accounts.conftest import login, me
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def refresh(token: str) -> int:
    return APIClient().post("/v1/auth/refresh", {"refresh_token": token}, format="json").status_code


def test_a_password_change_ends_every_session_of_the_user(alice):
    first, second = login("alice", PASSWORD).json(), login("alice", PASSWORD).json()
    assert me(first["access_token"]) == 200 and me(second["access_token"]) == 200
    alice.set_password("a-brand-new-passphrase")
    alice.save()
    for session in (first, second):
        assert me(session["access_token"]) == 401
        assert refresh(session["refresh_token"]) == 401
    assert AuditEvent.objects.filter(action="auth.sessions_revoked", details__reason="password changed").exists()


def test_after_a_password_change_a_new_login_works(alice):
    alice.set_password("a-brand-new-passphrase")
    alice.save()
    fresh = login("alice", "a-brand-new-passphrase").json()
    assert me(fresh["access_token"]) == 200


def test_another_user_s_sessions_are_untouched(alice, bob):
    bobs = login("bob", PASSWORD).json()
    alice.set_password("a-brand-new-passphrase")
    alice.save()
    assert me(bobs["access_token"]) == 200


def test_a_password_change_keeps_the_user_s_api_keys(alice, api_key_for):
    secret = api_key_for(alice)
    alice.set_password("a-brand-new-passphrase")
    alice.save()
    assert me(secret) == 200


def test_a_deactivation_ends_sessions_for_good(alice):
    session = login("alice", PASSWORD).json()
    alice.is_active = False
    alice.save()
    assert me(session["access_token"]) == 401
    alice.is_active = True
    alice.save()
    assert me(session["access_token"]) == 401
    assert refresh(session["refresh_token"]) == 401


def test_a_rehash_on_login_is_not_a_password_change(alice, settings):
    # A login that upgrades the stored hash saves the password without changing it.
    session = login("alice", PASSWORD).json()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher", *settings.PASSWORD_HASHERS]
    assert login("alice", PASSWORD).status_code == 200  # rehashed now
    assert me(session["access_token"]) == 200


def test_an_admin_password_change_ends_the_sessions(alice, admin_client):
    session = login("alice", PASSWORD).json()
    response = admin_client.post(
        f"/admin/accounts/user/{alice.pk}/password/",
        {"password1": "Another-Long-Passphrase-9", "password2": "Another-Long-Passphrase-9"},
    )
    assert response.status_code == 302, response.content
    assert me(session["access_token"]) == 401


def test_an_admin_can_end_all_sessions_of_a_user(alice, admin_client):
    session = login("alice", PASSWORD).json()
    admin_client.post("/admin/accounts/user/", {"action": "end_sessions", "_selected_action": [alice.pk]})
    assert me(session["access_token"]) == 401
    assert AuditEvent.objects.filter(action="auth.sessions_revoked", details__reason="ended by an admin").exists()
