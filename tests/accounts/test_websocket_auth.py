"""Websocket authentication as a real client sees it, through uvicorn: the credential in the
``Sec-WebSocket-Protocol`` header (``bearer, <token>``) is accepted and answered with ``bearer``;
without a valid one the socket closes with 4401, without the ``read`` scope with 4403, codes a
client can read (a close before the handshake was an HTTP 403, the reason lost)."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.django_db(transaction=True)


def _close_code(url: str, **kwargs: object) -> tuple[str | None, int | None]:
    with connect(url, open_timeout=10, **kwargs) as ws:
        try:
            ws.recv(timeout=10)
        except ConnectionClosed as exc:
            return ws.subprotocol, exc.rcvd.code if exc.rcvd else None
    pytest.fail("the socket stayed open")


@pytest.mark.parametrize("path", ["/ws/tasks/", "/ws/status/", "/ws/gpu/"])
def test_the_bearer_subprotocol_authenticates_and_is_answered(live_medai, alice, token_for, path):
    base = live_medai.replace("http://", "ws://")
    with connect(base + path, subprotocols=["bearer", token_for(alice)], open_timeout=10) as ws:
        assert ws.subprotocol == "bearer"  # never the token itself
        assert json.loads(ws.recv(timeout=10))["type"] in ("hello", "gpu.status")


@pytest.mark.parametrize("path", ["/ws/tasks/", "/ws/status/", "/ws/gpu/"])
def test_no_or_a_bad_credential_closes_4401_and_a_missing_scope_4403(live_medai, alice, api_key_for, path):
    url = live_medai.replace("http://", "ws://") + path
    assert _close_code(url) == (None, 4401)
    assert _close_code(url, subprotocols=["bearer", "not-a-token"]) == ("bearer", 4401)
    assert _close_code(url + "?token=not-a-token") == (None, 4401)
    chat_only = api_key_for(alice, scopes=["chat"])
    assert _close_code(url, subprotocols=["bearer", chat_only]) == ("bearer", 4403)
