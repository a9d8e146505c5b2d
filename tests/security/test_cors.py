"""CORS is closed by default (no Access-Control-Allow-Origin for anyone, a preflight gets nothing)
and opens per origin with CORS_ALLOWED_ORIGINS: that origin, and only it, may call /v1/ with a
bearer token and read the rate-limit headers; no credentials by cookie, and never outside /v1/."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

ORIGIN = "https://portal.example.org"


def _preflight(client, origin: str, path: str = "/v1/chat/completions"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_closed_by_default(client, client_for, alice):
    assert "Access-Control-Allow-Origin" not in _preflight(client, ORIGIN)
    response = client_for(alice).get("/v1/models", headers={"Origin": ORIGIN})
    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response


def test_an_allowed_origin_may_call_the_api(client, client_for, alice, settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    preflight = _preflight(client, ORIGIN)
    assert preflight["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in preflight["Access-Control-Allow-Headers"].lower()
    assert "POST" in preflight["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in preflight
    response = client_for(alice).get("/v1/models", headers={"Origin": ORIGIN})
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-RateLimit-Remaining" in response["Access-Control-Expose-Headers"]


def test_another_origin_stays_closed(client, settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    assert "Access-Control-Allow-Origin" not in _preflight(client, "https://evil.example.com")


def test_pages_and_the_admin_never_answer_cors(client, settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]
    assert "Access-Control-Allow-Origin" not in _preflight(client, ORIGIN, "/admin/login/")
