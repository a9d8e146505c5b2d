"""The same buckets over websockets as over HTTP: a connection and each message a client sends take
a unit; over the limit a new connection closes with 4429 and a message is answered by an error frame."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.django_db(transaction=True)


def test_http_requests_connections_and_messages_share_one_bucket(live_medai, alice, token_for, settings):
    settings.MEDAI_RATE_LIMIT_USER_RATE, settings.MEDAI_RATE_LIMIT_USER_BURST = 0.001, 3
    token = token_for(alice)
    http = httpx.post(
        f"{live_medai}/v1/chat/completions",
        json={"model": "none", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert http.headers["X-RateLimit-Remaining"] == "2"  # the HTTP request took one
    url = live_medai.replace("http://", "ws://") + "/ws/status/"
    with connect(url, subprotocols=["bearer", token], open_timeout=10) as ws:  # the connection, one
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        ws.send(json.dumps({"subscribe": {"task": str(uuid.uuid4())}}))  # a message, the last one
        assert json.loads(ws.recv(timeout=10))["data"]["code"] == "task_not_found"
        ws.send(json.dumps({"subscribe": {"task": str(uuid.uuid4())}}))
        refused = json.loads(ws.recv(timeout=10))
        assert refused["type"] == "error" and refused["data"]["code"] == "rate_limit_exceeded"
        assert refused["data"]["retry_after"] >= 1
        with connect(url, subprotocols=["bearer", token], open_timeout=10) as again:
            with pytest.raises(ConnectionClosed) as closed:
                again.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
