from __future__ import annotations

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def login(username: str, password: str = PASSWORD, location_id: str = "demo"):
    return APIClient().post(
        "/v1/auth/login", {"username": username, "password": password, "location_id": location_id}, format="json"
    )


def test_login_returns_bearer_tokens_with_role_location_and_scope_claims(alice):
    response = login("alice")
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == int(settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds())
    claims = jwt.decode(body["access_token"], settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])
    assert claims["sub"] == str(alice.pk)
    assert claims["role"] == "clinician"
    assert claims["location_id"] == "demo"
    assert set(claims["scope"].split()) == {"chat", "submit", "read", "gpu:read"}


def test_login_to_a_location_the_user_does_not_work_at_is_forbidden(alice, north):
    response = login("alice", location_id="north")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "location_denied"
    assert AuditEvent.objects.filter(action="auth.login", outcome="denied").count() == 1


def test_wrong_password_is_401_and_audited(alice):
    response = login("alice", password="nope-nope")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    event = AuditEvent.objects.get(action="auth.login")
    assert event.outcome == "failure"


def test_login_with_missing_field_names_the_field(alice):
    response = APIClient().post("/v1/auth/login", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "location_id"


def test_refresh_rotates_and_the_old_refresh_token_stops_working(alice):
    first = login("alice").json()
    client = APIClient()
    second = client.post("/v1/auth/refresh", {"refresh_token": first["refresh_token"]}, format="json")
    assert second.status_code == 200
    assert second.json()["access_token"] != first["access_token"]
    again = client.post("/v1/auth/refresh", {"refresh_token": first["refresh_token"]}, format="json")
    assert again.status_code == 401


def test_logout_revokes_the_access_and_refresh_tokens(alice):
    tokens = login("alice").json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert client.get("/v1/models").status_code == 200
    assert client.post("/v1/auth/logout", {"refresh_token": tokens["refresh_token"]}, format="json").status_code == 204
    after = client.get("/v1/models")
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "token_revoked"
    refreshed = APIClient().post("/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]}, format="json")
    assert refreshed.status_code == 401


def test_inactive_user_token_is_rejected(alice, token_for):
    token = token_for(alice)
    alice.is_active = False
    alice.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/v1/models").status_code == 401


def test_tampered_token_is_rejected(alice, token_for):
    token = token_for(alice)
    header, payload, sig = token.split(".")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {header}.{payload}.{sig[::-1]}")
    response = client.get("/v1/models")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
