"""Redis killed under a running web process: while it is down nothing answers 500 (the GPU status
says its sample is stale, readiness says Redis is down, websockets close with 1013 and a refused
handshake is never a 500); once it is back on the same socket every client of the process
reconnects by itself: the cache, the channel layer, the GPU state client, the broker's wake-up
client and the slot publisher."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.test import RequestFactory
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from medai.embedded import EmbeddedRedis, kill
from medai.redisconf import cache_config, channel_layers_config
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)


def _reset_clients() -> None:
    from apps.accounts.governance import store
    from apps.gpu import shared
    from apps.inference import broker

    store.reset_client()
    shared.reset_client()
    broker._redis = None


@pytest.fixture
def own_redis(settings, tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """This process on a Redis of the test's own, which it may kill and start again."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    settings.REDIS_URL = server.url
    settings.CACHES = cache_config(server.url, prefix="medai-outage", options=settings.REDIS_OPTIONS)
    settings.CHANNEL_LAYERS = channel_layers_config(
        server.url,
        prefix="medai-outage:asgi",
        socket_timeout=2.0,
        connect_timeout=1.0,
        health_check_interval=30.0,
        receive_block=1.0,
    )
    _reset_clients()
    yield server
    server.stop()
    _reset_clients()


@pytest.fixture
def web(own_redis: EmbeddedRedis) -> Iterator[str]:
    from tests.support.servers import LiveASGIServer

    server = LiveASGIServer().start()
    yield server.url
    server.stop()


def _ws(base: str, path: str, token: str):
    return connect(base.replace("http://", "ws://") + path, subprotocols=["bearer", token], open_timeout=10)


def _close_code(ws) -> int | None:
    try:
        while True:
            ws.recv(timeout=10)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


def _eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:  # not yet
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            pytest.fail(f"{check} did not hold within {timeout}s")
        time.sleep(0.2)


def test_killed_redis_means_503_and_1013_then_everything_reconnects_on_the_same_socket(
    own_redis, web, alice, token_for, stub_backend, settings
):
    from django.core.cache import cache

    # Governance's counters live in this Redis too: failing open, a chat is still served while it
    # is down (fail closed, the default, answers 503: tests/accounts/test_quota_store_down.py).
    settings.MEDAI_GOVERNANCE_FAIL_OPEN = True

    from apps.accounts.services import authenticate_header
    from apps.gpu import shared, slots
    from apps.gpu.monitor import Monitor
    from apps.gpu.providers import SimulatedProvider
    from apps.inference import broker, push, queue

    register_model("stub-a", stub_backend)
    token = token_for(alice)
    headers = {"Authorization": f"Bearer {token}"}
    Monitor(SimulatedProvider(), supervise=False).sample()
    socket_path = own_redis.socket_file
    with _ws(web, "/ws/status/", token) as status_ws:
        assert json.loads(status_ws.recv(timeout=10))["type"] == "hello"
        kill(own_redis)  # SIGKILL, as a crash would
        # the open socket is closed with "try again later", not dropped
        assert _close_code(status_ws) == 1013
    # a new one completes its handshake and is told the same (it was an HTTP 500 before)
    with _ws(web, "/ws/gpu/", token) as ws:
        assert _close_code(ws) == 1013
    ready = httpx.get(f"{web}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["redis"]["ok"] is False
    gpu = httpx.get(f"{web}/v1/gpu/status", headers=headers, timeout=30)
    assert gpu.status_code == 200
    chat = httpx.post(
        f"{web}/v1/chat/completions",
        headers=headers,
        timeout=30,
        json={"model": "stub-a", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 200  # the GPU state and circuits fall back on this process's view

    own_redis.restart()
    assert own_redis.socket_file == socket_path

    # every client of this process reconnects by itself
    cache.set("medai-outage-probe", "back", 10)
    assert cache.get("medai-outage-probe") == "back"
    assert shared.client().ping()
    broker.wake("medai-outage-probe")
    assert broker.redis_client().llen(broker.wake_key("medai-outage-probe")) == 1
    slots._dirty.set()
    _eventually(lambda: shared.client().hget(shared.key("inflight"), slots.PROCESS_ID))
    assert httpx.get(f"{web}/readyz", timeout=30).json()["checks"]["redis"]["ok"] is True

    # and a websocket works again, events included
    with _ws(web, "/ws/status/", token) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        task = queue.submit_task(
            authenticate_header(f"Bearer {token}"),
            {"model": "stub-a", "messages": [{"role": "user", "content": "again"}]},
        ).task
        assert push.flush(5)
        update = json.loads(ws.recv(timeout=10))
        assert (update["data"]["task_id"], update["data"]["status"]) == (str(task.id), "queued")
    with _ws(web, "/ws/gpu/", token) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "gpu.status"


def test_a_view_that_hits_a_redis_outage_answers_503_with_retry_after() -> None:
    from medai.middleware import RedisUnavailableMiddleware

    middleware = RedisUnavailableMiddleware(lambda request: None)
    api = middleware.process_exception(RequestFactory().get("/v1/models"), RedisConnectionError("gone"))
    assert api is not None and api.status_code == 503 and api["Retry-After"] == "5"
    assert json.loads(api.content)["error"]["code"] == "redis_unavailable"
    page = middleware.process_exception(RequestFactory().get("/admin/"), RedisConnectionError("gone"))
    assert page is not None and page.status_code == 503
    assert middleware.process_exception(RequestFactory().get("/v1/models"), ValueError("a bug")) is None
