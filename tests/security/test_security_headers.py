"""Security headers: every API answer and every page that passes Django says ``Cache-Control:
no-store`` (PHI must not be cached), HTML pages carry the CSP and a Permissions-Policy, every answer
nosniff, a Referrer-Policy and ``X-Frame-Options: DENY``; HSTS is sent over TLS (directly or
behind a trusted proxy) and never over plain HTTP; static files keep their caching."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import register_model

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/v1/models", "/v1/async/tasks", "/v1/auth/me", "/v1/gpu/status", "/v1/nowhere"])
def test_api_answers_are_never_stored(client_for, alice, path):
    response = client_for(alice).get(path)
    assert response["Cache-Control"] == "no-store", path
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" not in response  # JSON, not a page


def test_errors_are_never_stored_either(client):
    response = client.post("/v1/chat/completions", data=b"{}", content_type="application/json")
    assert response.status_code == 401 and response["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/", "/admin/login/"])
def test_pages_carry_the_csp_and_are_never_stored(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    csp = response["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "camera=()" in response["Permissions-Policy"]
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db(transaction=True)
def test_a_streamed_answer_is_not_stored(live_medai, token_for, alice, stub_backend):
    register_model("m", stub_backend)
    with httpx.stream(
        "POST",
        live_medai + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        json={"model": "Chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        response.read()


def test_hsts_only_over_tls(client):
    assert "Strict-Transport-Security" not in client.get("/healthz")
    secure = client.get("/healthz", secure=True)
    assert secure["Strict-Transport-Security"].startswith("max-age=31536000")


def test_hsts_behind_a_trusted_tls_proxy(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert response["Strict-Transport-Security"].startswith("max-age=")


def test_static_files_keep_their_caching(client):
    response = client.get("/static/medai/ask.js")
    assert response.status_code == 200
    assert response.get("Cache-Control", "") != "no-store"
