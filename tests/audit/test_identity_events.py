"""Every step of identity leaves an audit event with who, where, from where and why: a login
(success, failure, refused location), a refresh (success, invalid, reused after rotation), a
logout, and an API key's creation, use, rotation and revocation. No event carries a secret."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from apps.accounts.models import ApiKey
from apps.accounts.services import revoke_api_key, rotate_api_key
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ORIGIN = {"HTTP_USER_AGENT": "ward-7-terminal/1.0", "HTTP_X_PURPOSE_OF_USE": "TREAT", "REMOTE_ADDR": "10.1.2.3"}


def login(client: APIClient, username: str, password: str, location: str = "demo"):
    return client.post(
        "/v1/auth/login",
        {"username": username, "password": password, "location_id": location},
        format="json",
        **ORIGIN,
    )


def no_secret_in(event, *secrets: str) -> None:
    text = json.dumps({"details": event.details, "ua": event.user_agent, "object_id": event.object_id})
    for secret in secrets:
        assert secret not in text


def test_a_login_is_audited_with_its_origin_and_purpose(alice, events):
    response = login(APIClient(), "alice", PASSWORD)
    assert response.status_code == 200
    [event] = events("auth.login")
    assert (event.outcome, event.actor, event.actor_id, event.location) == ("success", "alice", alice.pk, "demo")
    assert (event.ip, event.user_agent, event.purpose_of_use) == ("10.1.2.3", "ward-7-terminal/1.0", "TREAT")
    assert event.correlation_id == response["X-Request-ID"]
    assert event.organization_id == alice.organization_id
    no_secret_in(event, PASSWORD, response.json()["access_token"])


def test_a_failed_login_is_audited_once_without_the_password(alice, events):
    assert login(APIClient(), "alice", "wrong-password-123").status_code == 401
    [event] = events("auth.login")
    assert event.outcome == "failure" and event.details["username"] == "alice"
    no_secret_in(event, "wrong-password-123")
    assert events("auth.unauthenticated") == []  # the verb said why: no second event for its 401


def test_a_login_at_a_location_the_user_does_not_work_at_is_denied(alice, north, events):
    assert login(APIClient(), "alice", PASSWORD, "north").status_code == 403
    [event] = events("auth.login")
    assert event.outcome == "denied" and event.location == "north"


def test_refresh_success_invalid_and_reuse_are_audited(alice, events):
    client = APIClient()
    first = login(client, "alice", PASSWORD).json()["refresh_token"]
    assert client.post("/v1/auth/refresh", {"refresh_token": first}, format="json", **ORIGIN).status_code == 200
    # the rotated-out token presented again: a stolen copy, or a client bug
    assert client.post("/v1/auth/refresh", {"refresh_token": first}, format="json", **ORIGIN).status_code == 401
    assert client.post("/v1/auth/refresh", {"refresh_token": "garbage"}, format="json", **ORIGIN).status_code == 401
    refreshes = events("auth.refresh")
    assert [(e.outcome, e.details.get("reason")) for e in refreshes] == [("success", None), ("failure", "invalid")]
    [reused] = events("auth.refresh_reused")
    assert reused.outcome == "denied" and reused.actor == "alice" and reused.ip == "10.1.2.3"
    for event in refreshes + [reused]:
        no_secret_in(event, first)


def test_a_logout_is_audited(alice, token_for, events):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    assert client.post("/v1/auth/logout", {}, format="json", **ORIGIN).status_code == 204
    [event] = events("auth.logout")
    assert event.actor == "alice" and event.purpose_of_use == "TREAT" and event.ip == "10.1.2.3"


def test_an_api_keys_creation_use_rotation_and_revocation_are_audited(alice, api_key_for, events):
    secret = api_key_for(alice)
    key = ApiKey.objects.get(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/v1/auth/me", **ORIGIN).status_code == 200
    assert client.get("/v1/auth/me", **ORIGIN).status_code == 200  # within the minute: one use event
    new_key, new_secret = rotate_api_key(key, actor=alice)
    revoke_api_key(new_key, actor=alice)

    [created, _] = events("apikey.create")  # the key, then its replacement
    assert created.object_id == str(key.pk) and created.details["prefix"] == key.prefix
    [used] = events("apikey.use")
    assert (used.api_key_id, used.actor, used.object_id, used.ip) == (key.pk, "alice", str(key.pk), "10.1.2.3")
    [rotated] = events("apikey.rotate")
    assert (rotated.details["old_prefix"], rotated.details["new_prefix"]) == (key.prefix, new_key.prefix)
    [revoked] = events("apikey.revoke")
    assert revoked.object_id == str(new_key.pk)
    for event in events():
        no_secret_in(event, secret, new_secret)
