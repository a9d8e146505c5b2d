"""Platform surface: liveness, readiness, metrics, security headers, JSON 404s, websocket auth."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from medai.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthz_answers_200():
    assert Client().get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_each_dependency():
    response = Client().get("/readyz")
    body = response.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    # No qcluster runs in this test, so the platform is not ready for async work.
    assert response.status_code == 503 and not body["checks"]["workers"]["ok"]


def test_readyz_reports_which_model_servers_are_serving():
    from apps.gpu import shared
    from tests.conftest import register_model

    up = register_model("up", "http://127.0.0.1:9/v1")
    down = register_model("down", "http://127.0.0.1:9/v1")
    shared.mark_health(up.pk, True, "ok")
    shared.mark_health(down.pk, False, "HTTP 503")
    models = Client().get("/readyz").json()["models"]
    assert models["ok"] and models["serving"] == ["up"] and models["enabled"] == 2

    shared.mark_health(up.pk, False, "connection refused")
    models = Client().get("/readyz").json()["models"]
    assert not models["ok"] and models["serving"] == []


def test_metrics_are_exposed_in_prometheus_format():
    Client().get("/healthz")
    text = Client().get("/metrics").content.decode()
    assert "django_http_requests_total_by_method_total" in text


def test_security_headers_and_no_cors():
    response = Client().get("/healthz", HTTP_ORIGIN="https://evil.example")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert "Access-Control-Allow-Origin" not in response
    assert response["X-Request-ID"]


def test_unknown_api_path_is_a_json_404():
    response = Client().get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_caller_request_id_is_kept_and_a_bad_one_replaced():
    assert Client().get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    assert Client().get("/healthz", HTTP_X_REQUEST_ID="bad id; drop")["X-Request-ID"] != "bad id; drop"


async def test_websocket_without_credentials_is_closed_4401():
    # accepted, then closed with the code: a close before the accept would be an HTTP 403 to a
    # real client, the code lost (tests/accounts/test_websocket_auth.py checks it over uvicorn)
    communicator = WebsocketCommunicator(application, "/ws/status/")
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_websocket_with_a_jwt_is_accepted(alice, token_for):
    from asgiref.sync import sync_to_async

    token = await sync_to_async(token_for)(alice)
    communicator = WebsocketCommunicator(application, f"/ws/status/?token={token}")
    connected, _ = await communicator.connect()
    assert connected
    hello = await communicator.receive_json_from()
    assert hello == {"type": "hello", "data": {"user": "alice", "location": "demo"}}
    await communicator.disconnect()
