"""A staff member's admin session opens the websockets of the admin's own pages, only from a page
of this site: a session cookie sent from another origin (cross-site websocket hijacking) is refused
4403, a session of a non-staff user or an ended one 4401, and the sockets of API clients and the
clinician pages still take only a JWT or an API key in the subprotocol (4401 with a session)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import path

from apps.accounts.models import SCOPE_GPU_READ, User
from apps.accounts.websocket import AuthenticatedJsonConsumer
from medai.asgi import application
from medai.ws_auth import JWTAuthMiddleware
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "http://testserver"


class AdminPageConsumer(AuthenticatedJsonConsumer):
    """A socket of an admin page: takes a staff session (as the dashboard's does)."""

    required_scope = SCOPE_GPU_READ
    accepts_session = True

    async def opened(self, principal: Any) -> None:
        await self.send_json({"type": "hello", "data": {"user": principal.username, "method": principal.method}})


admin_page_app = JWTAuthMiddleware(URLRouter([path("ws/admin-page/", AdminPageConsumer.as_asgi())]))


def _session_of(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.fixture
def staff_session(org) -> str:
    staff = User.objects.create_user("ivy", password=PASSWORD, role=User.Role.ADMIN, organization=org, is_staff=True)
    return _session_of(staff)


def _headers(session: str | None, origin: str | None, host: str = "testserver") -> list[tuple[bytes, bytes]]:
    headers = [(b"host", host.encode())]
    if session:
        headers.append((b"cookie", f"sessionid={session}; csrftoken=x".encode()))
    if origin:
        headers.append((b"origin", origin.encode()))
    return headers


async def _first(app: Any, url: str, **kwargs: Any) -> dict:
    socket = WebsocketCommunicator(app, url, **kwargs)
    connected, _ = await socket.connect(timeout=10)
    assert connected  # refusals complete the handshake first, so the code reaches the client
    message = await socket.receive_output(timeout=10)
    await socket.disconnect()
    return message


async def test_a_staff_session_from_this_site_opens_the_admin_page_socket(staff_session):
    message = await _first(admin_page_app, "/ws/admin-page/", headers=_headers(staff_session, SITE))
    assert message["type"] == "websocket.send"
    assert '"user": "ivy"' in message["text"] and '"method": "session"' in message["text"]


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://testserver.evil.example", "https://testserver", "null", None],
    ids=["another-site", "a-lookalike-host", "another-scheme", "opaque", "no-origin"],
)
async def test_a_session_cookie_from_another_origin_is_refused_4403(staff_session, origin):
    message = await _first(admin_page_app, "/ws/admin-page/", headers=_headers(staff_session, origin))
    assert message == {"type": "websocket.close", "code": 4403}


async def test_a_trusted_origin_may_use_the_session(staff_session, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://admin.hospital.example"]
    headers = _headers(staff_session, "https://admin.hospital.example", host="medai.internal")
    message = await _first(admin_page_app, "/ws/admin-page/", headers=headers)
    assert message["type"] == "websocket.send"


async def test_a_host_outside_allowed_hosts_is_not_this_site(staff_session):
    headers = _headers(staff_session, "http://intruder.example", host="intruder.example")
    assert await _first(admin_page_app, "/ws/admin-page/", headers=headers) == {
        "type": "websocket.close",
        "code": 4403,
    }


async def test_a_non_staff_or_ended_session_is_closed_4401(alice, staff_session):
    clinician = await sync_to_async(_session_of)(alice)
    for session in (clinician, "no-such-session"):
        message = await _first(admin_page_app, "/ws/admin-page/", headers=_headers(session, SITE))
        assert message == {"type": "websocket.close", "code": 4401}


async def test_a_changed_password_ends_the_session_s_sockets(staff_session):
    staff = await sync_to_async(User.objects.get)(username="ivy")
    staff.set_password("another long passphrase")
    await sync_to_async(staff.save)()
    message = await _first(admin_page_app, "/ws/admin-page/", headers=_headers(staff_session, SITE))
    assert message == {"type": "websocket.close", "code": 4401}


@pytest.mark.parametrize("url", ["/ws/status/", "/ws/gpu/"])
async def test_api_sockets_take_no_session(staff_session, url):
    message = await _first(application, url, headers=_headers(staff_session, SITE))
    assert message == {"type": "websocket.close", "code": 4401}


async def test_a_bearer_credential_still_opens_api_sockets_whatever_the_origin(alice, token_for, staff_session):
    token = await sync_to_async(token_for)(alice)
    # The token is not ambient (a page must hold it), so no Origin check applies; the session
    # cookie sent along is not used.
    headers = _headers(staff_session, "https://integrator.example")
    message = await _first(application, "/ws/status/", subprotocols=["bearer", token], headers=headers)
    assert message["type"] == "websocket.send" and '"user": "alice"' in message["text"]
