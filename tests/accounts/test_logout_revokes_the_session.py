"""Logout ends the session: the access token, the refresh token (even when the client does not
send it), and the session's earlier access tokens."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.accounts.conftest import login, me
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def post(path: str, body: dict, token: str | None = None):
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post(path, body, format="json")


def test_logout_without_the_refresh_token_still_revokes_it(alice):
    session = login("alice", PASSWORD).json()
    assert post("/v1/auth/logout", {}, session["access_token"]).status_code == 204
    assert me(session["access_token"]) == 401
    answer = post("/v1/auth/refresh", {"refresh_token": session["refresh_token"]})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "token_revoked"


def test_logout_after_a_refresh_ends_the_tokens_issued_before_it(alice):
    session = login("alice", PASSWORD).json()
    renewed = post("/v1/auth/refresh", {"refresh_token": session["refresh_token"]}).json()
    assert post("/v1/auth/logout", {}, renewed["access_token"]).status_code == 204
    assert me(session["access_token"]) == 401  # the same session, an older access token
    assert post("/v1/auth/refresh", {"refresh_token": renewed["refresh_token"]}).status_code == 401


def test_logout_ends_only_its_own_session(alice):
    phone, desk = login("alice", PASSWORD).json(), login("alice", PASSWORD).json()
    assert post("/v1/auth/logout", {}, phone["access_token"]).status_code == 204
    assert me(desk["access_token"]) == 200
    assert post("/v1/auth/refresh", {"refresh_token": desk["refresh_token"]}).status_code == 200


def test_logout_with_another_user_s_refresh_token_is_refused(alice, bob):
    alices, bobs = login("alice", PASSWORD).json(), login("bob", PASSWORD).json()
    answer = post("/v1/auth/logout", {"refresh_token": bobs["refresh_token"]}, alices["access_token"])
    assert answer.status_code == 403
    assert post("/v1/auth/refresh", {"refresh_token": bobs["refresh_token"]}).status_code == 200
