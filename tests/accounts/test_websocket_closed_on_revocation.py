"""An open websocket lives no longer than its credential: it is closed with 4401 when the
credential is revoked (a key revoked, a logout, a password change, a removal from the location)
or expires, and stays open through changes that leave it valid."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from apps.accounts import services
from apps.accounts.models import ApiKey
from medai.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_4401 = {"type": "websocket.close", "code": 4401}


async def open_socket(credential: str, path: str = "/ws/gpu/") -> WebsocketCommunicator:
    socket = WebsocketCommunicator(application, path, subprotocols=["bearer", credential])
    connected, _ = await socket.connect(timeout=10)
    assert connected
    return socket


async def next_close(socket: WebsocketCommunicator, timeout: float = 10) -> dict:
    """The socket's next close frame, skipping the data messages before it."""
    while True:
        message = await socket.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            return message


async def stays_open(socket: WebsocketCommunicator) -> bool:
    """No close within a short while (data messages meanwhile are fine). ``receive_nothing``, not
    a timed-out ``receive_output``, which would cancel the application."""
    for _ in range(20):
        if await socket.receive_nothing(timeout=1.5):
            return True
        if (await socket.receive_output())["type"] == "websocket.close":
            return False
    return True


@pytest.mark.parametrize("path", ["/ws/gpu/", "/ws/status/"])
async def test_revoking_the_key_closes_its_socket_4401(alice, api_key_for, path):
    secret = await sync_to_async(api_key_for)(alice)
    socket = await open_socket(secret, path)
    key = await sync_to_async(ApiKey.objects.get)()
    await sync_to_async(services.revoke_api_key)(key)
    assert await next_close(socket) == CLOSED_4401


async def test_a_logout_closes_the_session_s_socket_4401(alice, token_for):
    token = await sync_to_async(token_for)(alice)
    socket = await open_socket(token)
    principal = (await sync_to_async(services.authenticate_bearer)(token))[1]
    await sync_to_async(services.logout)(principal, None)
    assert await next_close(socket) == CLOSED_4401


async def test_a_password_change_closes_the_user_s_sockets_but_not_others(alice, bob, token_for):
    alices = await open_socket(await sync_to_async(token_for)(alice))
    bobs = await open_socket(await sync_to_async(token_for)(bob))

    def change_password() -> None:
        alice.set_password("a-brand-new-passphrase")
        alice.save()

    await sync_to_async(change_password)()
    assert await next_close(alices) == CLOSED_4401
    assert await stays_open(bobs)
    await bobs.disconnect()


async def test_removal_from_the_location_closes_the_socket(alice, demo, token_for):
    socket = await open_socket(await sync_to_async(token_for)(alice))
    await sync_to_async(alice.locations.remove)(demo)
    assert await next_close(socket) == CLOSED_4401


async def test_a_rotation_in_its_grace_period_leaves_the_old_key_s_socket_open(alice, api_key_for):
    secret = await sync_to_async(api_key_for)(alice)
    socket = await open_socket(secret)
    key = await sync_to_async(ApiKey.objects.get)()
    await sync_to_async(services.rotate_api_key)(key, grace_hours=1)
    assert await stays_open(socket)
    await socket.disconnect()


async def test_the_socket_closes_4401_when_its_token_expires(alice, demo):
    def short_token() -> str:
        token = AccessToken(services.issue_tokens(alice, demo).access_token)
        token.set_exp(lifetime=timedelta(seconds=2))
        return str(token)

    socket = await open_socket(await sync_to_async(short_token)())
    assert await next_close(socket, timeout=15) == CLOSED_4401
