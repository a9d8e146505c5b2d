"""Every accepted websocket leaves two audit events: ``ws.open`` (who, from where, which socket:
its path and an id of its own) and, beside it, ``ws.close`` with the close code and how long it
was open, whether the client or the server closed it."""

from __future__ import annotations

import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def _events(n: int) -> list[AuditEvent]:
    deadline = time.monotonic() + 10  # the background writer appends them within its linger
    while time.monotonic() < deadline:
        found = list(AuditEvent.objects.filter(action__startswith="ws.").order_by("seq"))
        if len(found) >= n:
            return found
        time.sleep(0.05)
    pytest.fail(f"expected {n} websocket events, found {len(found)}")


def test_an_open_and_its_close_are_audited_with_code_and_duration(live_medai, alice, token_for):
    url = live_medai.replace("http://", "ws://") + "/ws/tasks/"
    with connect(url, subprotocols=["bearer", token_for(alice)], open_timeout=10, user_agent_header="ward-pc") as ws:
        ws.recv(timeout=10)  # hello
        time.sleep(0.2)
        ws.close(code=1000)
    opened, closed = _events(2)
    assert (opened.action, closed.action) == ("ws.open", "ws.close")
    assert opened.actor == closed.actor == "alice" and opened.location == "demo"
    assert opened.object_type == "websocket" and opened.object_id == closed.object_id != ""
    assert opened.details["path"] == closed.details["path"] == "/ws/tasks/"
    assert opened.user_agent == "ward-pc" and opened.ip == "127.0.0.1"
    assert closed.details["code"] == 1000 and closed.details["duration_s"] >= 0.2


def test_a_close_by_the_server_is_audited_with_its_code(live_medai, alice, token_for):
    from apps.accounts.services import revoke_sessions

    url = live_medai.replace("http://", "ws://") + "/ws/tasks/"
    with connect(url, subprotocols=["bearer", token_for(alice)], open_timeout=10) as ws:
        ws.recv(timeout=10)
        revoke_sessions(alice, reason="test")
        with pytest.raises(ConnectionClosed) as closed_by_server:
            ws.recv(timeout=10)
    assert closed_by_server.value.rcvd is not None and closed_by_server.value.rcvd.code == 4401
    opened, closed = _events(2)
    assert closed.action == "ws.close" and closed.object_id == opened.object_id
    assert closed.details["code"] == 4401


def _refusal(url: str, **kwargs: object) -> int | None:
    with connect(url, open_timeout=10, user_agent_header="ward-pc", **kwargs) as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def _refusal_events(action: str, n: int) -> list[AuditEvent]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = list(AuditEvent.objects.filter(action=action).order_by("seq"))
        if len(found) >= n:
            return found
        time.sleep(0.05)
    pytest.fail(f"expected {n} {action} events, found {len(found)}")


def test_a_refused_socket_is_audited_as_the_http_refusal_it_stands_for(
    live_medai, alice, api_key_for, token_for, settings
):
    url = live_medai.replace("http://", "ws://") + "/ws/tasks/"
    assert _refusal(url) == 4401  # no credential
    (anonymous,) = _refusal_events("auth.unauthenticated", 1)
    assert anonymous.outcome == "denied" and anonymous.actor == "" and anonymous.object_type == "websocket"
    assert anonymous.details["ws_close_code"] == 4401 and anonymous.details["http_status"] == 401
    assert anonymous.details["path"] == "/ws/tasks/"
    assert anonymous.ip == "127.0.0.1" and anonymous.user_agent == "ward-pc"

    chat_only = api_key_for(alice, scopes=["chat"])
    assert _refusal(url, subprotocols=["bearer", chat_only]) == 4403  # a credential without the scope
    (forbidden,) = _refusal_events("auth.forbidden", 1)
    assert forbidden.actor == "alice" and forbidden.location == "demo" and forbidden.api_key_id is not None
    assert forbidden.details["ws_close_code"] == 4403 and forbidden.details["http_status"] == 403

    settings.MEDAI_RATE_LIMIT_USER_RATE, settings.MEDAI_RATE_LIMIT_USER_BURST = 0.001, 1
    token = token_for(alice)
    with connect(url, subprotocols=["bearer", token], open_timeout=10) as ws:  # takes the one unit
        ws.recv(timeout=10)
        assert _refusal(url, subprotocols=["bearer", token]) == 4429
    (limited,) = _refusal_events("limit.rejected", 1)
    assert limited.actor == "alice" and limited.details["ws_close_code"] == 4429
    assert limited.details["http_status"] == 429
    # no socket was accepted for any of the three: no ws.open names them
    assert AuditEvent.objects.filter(action="ws.open").count() == 1
