"""The middleware stack stays async under ASGI and still does its job there: security headers,
request ids, static files, sessions (see medai/middleware.py)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import AsyncClient
from django.utils.module_loading import import_string

from tests.conftest import PASSWORD


def test_every_middleware_is_async_capable():
    # One sync-only middleware turns the whole stack above it synchronous: every request would
    # then cross into a thread and back.
    sync_only = [path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)]
    assert sync_only == []


@pytest.mark.django_db
async def test_async_request_gets_security_headers_and_a_request_id():
    response = await AsyncClient().get("/healthz", headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Request-ID"] == "trace-1"


@pytest.mark.django_db
async def test_missing_trailing_slash_is_redirected_under_asgi():
    # CommonMiddleware's APPEND_SLASH runs inline: /admin redirects to /admin/.
    response = await AsyncClient().get("/admin")
    assert response.status_code == 301 and response["Location"] == "/admin/"


async def test_static_files_are_served_under_asgi():
    response = await AsyncClient().get("/static/admin/css/base.css")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)  # a file: a sync iterator
    assert b"body" in body


@pytest.mark.django_db(transaction=True)
async def test_admin_login_session_is_saved_under_asgi(admin_user_async):
    client = AsyncClient()
    response = await client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
    assert response.status_code == 302, response.content[:500]
    assert settings.SESSION_COOKIE_NAME in response.cookies
    response = await client.get("/admin/")
    assert response.status_code == 200


@pytest.fixture
def admin_user_async(transactional_db):
    from apps.accounts.models import User

    return User.objects.create_superuser("root", password=PASSWORD)
