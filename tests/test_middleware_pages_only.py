"""The session, user and messages middleware serve pages (the admin, the web UI) only: API requests
under /v1/ pass them by, in sync and async mode, and keep every other middleware's work (see
medai/middleware.py, ``PagesOnlyMixin``)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory

from medai.middleware import AuthenticationMiddleware, MessageMiddleware, SessionMiddleware
from tests.conftest import PASSWORD

PAGES_ONLY = [SessionMiddleware, AuthenticationMiddleware, MessageMiddleware]
ATTRIBUTE = {SessionMiddleware: "session", AuthenticationMiddleware: "user", MessageMiddleware: "_messages"}


def _seen(request: HttpRequest) -> HttpResponse:
    return HttpResponse(",".join(sorted(a for a in ("session", "user", "_messages") if hasattr(request, a))))


def _stack(get_response):
    # innermost last, as in settings.MIDDLEWARE: session → user → messages → the view
    for cls in reversed(PAGES_ONLY):
        get_response = cls(get_response)
    return get_response


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/v1/auth/login"])
def test_api_requests_carry_no_session_user_or_messages(path):
    response = _stack(_seen)(RequestFactory().post(path))
    assert response.content == b""


@pytest.mark.parametrize("path", ["/admin/", "/", "/v1", "/v10/x"])
def test_pages_get_session_user_and_messages(path):
    response = _stack(_seen)(RequestFactory().get(path))
    assert response.content == b"_messages,session,user"


async def test_api_requests_pass_by_in_async_mode_too():
    async def seen(request: HttpRequest) -> HttpResponse:
        return _seen(request)

    stack = _stack(seen)
    assert (await stack(RequestFactory().post("/v1/chat/completions"))).content == b""
    assert (await stack(RequestFactory().get("/admin/"))).content == b"_messages,session,user"


@pytest.mark.django_db
def test_every_pages_only_middleware_is_in_the_stack():
    names = {f"{cls.__module__}.{cls.__name__}" for cls in PAGES_ONLY}
    assert names <= set(settings.MIDDLEWARE)


# Transactional: the 401's audit event is written by the audit buffer's thread, on a connection of
# its own (apps/audit/buffer.py), which must not wait for this test's transaction: on SQLite that
# transaction holds the write lock until the test ends; on PostgreSQL the event would be committed
# outside it and outlive the test.
@pytest.mark.django_db(transaction=True)
async def test_an_api_answer_keeps_security_headers_and_its_request_id_and_sets_no_cookie():
    response = await AsyncClient().get("/v1/models", headers={"X-Request-ID": "trace-api"})
    assert response.status_code == 401  # no bearer token: DRF's answer, not a redirect to a login page
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Request-ID"] == "trace-api"
    assert not response.cookies


@pytest.mark.django_db
def test_the_admin_still_logs_in_with_a_session_and_csrf():
    from apps.accounts.models import User

    User.objects.create_superuser("root", password=PASSWORD)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/")
    token = page.cookies[settings.CSRF_COOKIE_NAME].value
    refused = client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
    assert refused.status_code == 403  # no CSRF token in the form
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and settings.SESSION_COOKIE_NAME in response.cookies
    assert client.get("/admin/").status_code == 200
