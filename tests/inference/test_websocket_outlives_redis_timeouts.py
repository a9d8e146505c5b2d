"""A websocket stays open, idle, for longer than every Redis timeout it runs under (the channel
layer's blocking receive, its connections' socket timeout and health check, the group expiry)
and still receives events: a task's status change on ``/ws/status/``, a GPU update on
``/ws/gpu/``. Through a real uvicorn and a real websocket client, on the embedded Redis and on a
real one. (redis-py 8 reads with a 5 s socket timeout by default: with channels_redis' 5 s
``BZPOPMIN`` every idle socket died after 5-10 s without a close frame.)

The timeouts are made small here so the hold stays short; the test reads the ones the live
channel layer really uses and checks the hold outlasts each of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from medai.embedded import EmbeddedRedis
from medai.redisconf import channel_layers_config
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)

REAL_REDIS_URL = os.environ.get("MEDAI_TEST_REAL_REDIS_URL", "redis://127.0.0.1:6379/5")
# Small, so the test is short; each is checked to be shorter than the hold.
SOCKET_TIMEOUT = 0.5
RECEIVE_BLOCK = 0.5
HEALTH_CHECK = 0.5
GROUP_EXPIRY = 2  # seconds (channels_redis counts whole seconds; sockets renew at half)
HOLD = 3.0


@pytest.fixture(params=["embedded", "real"])
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "embedded":
        server = EmbeddedRedis(tmp_path / "redis").start()
        yield server.url
        server.stop()
        return
    try:
        redis.Redis.from_url(REAL_REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REAL_REDIS_URL} (CI has one; set MEDAI_TEST_REAL_REDIS_URL)")
    yield REAL_REDIS_URL


@pytest.fixture
def short_timeouts(settings, redis_url: str):
    settings.CHANNEL_LAYERS = channel_layers_config(
        redis_url,
        prefix="medai-test-hold:asgi",
        socket_timeout=SOCKET_TIMEOUT,
        connect_timeout=1.0,
        health_check_interval=HEALTH_CHECK,
        receive_block=RECEIVE_BLOCK,
        group_expiry=GROUP_EXPIRY,
    )
    from channels.layers import get_channel_layer

    timeouts = get_channel_layer().read_timeouts()
    # every timeout a websocket's receive runs under is shorter than the hold
    assert timeouts == {
        "receive_block": RECEIVE_BLOCK,
        "socket_timeout": SOCKET_TIMEOUT + RECEIVE_BLOCK,
        "health_check_interval": HEALTH_CHECK,
    }
    assert max([*timeouts.values(), GROUP_EXPIRY]) < HOLD
    yield


def _ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


def _idle(ws, seconds: float) -> None:
    """Nothing arrives for ``seconds``, and the socket stays open throughout."""
    try:
        frame = ws.recv(timeout=seconds)
    except TimeoutError:
        return
    except ConnectionClosed as exc:
        pytest.fail(f"the websocket closed while idle: {exc!r}")
    pytest.fail(f"unexpected frame while idle: {frame}")


def test_an_idle_status_socket_outlives_every_redis_timeout_and_still_gets_task_updates(
    short_timeouts, live_medai, alice, token_for
):
    from apps.accounts.services import authenticate_header
    from apps.inference import push, queue

    register_model("stub", "http://127.0.0.1:9/v1")
    token = token_for(alice)
    with connect(_ws_url(live_medai, "/ws/status/"), subprotocols=["bearer", token]) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        _idle(ws, HOLD)
        task = queue.submit_task(
            authenticate_header(f"Bearer {token}"),
            {"agent_type": "Chat", "messages": [{"role": "user", "content": "hi"}]},
        ).task
        assert push.flush(5)
        update = json.loads(ws.recv(timeout=10))
        assert (update["type"], update["data"]["task_id"], update["data"]["status"]) == (
            "task.update",
            str(task.id),
            "queued",
        )
        _idle(ws, HOLD)  # and again, after traffic
        ws.send(json.dumps({"subscribe": {"task": str(task.id)}}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "subscribed", "data": {"task": str(task.id)}}


def test_an_idle_gpu_socket_outlives_every_redis_timeout_and_still_gets_gpu_updates(
    short_timeouts, live_medai, alice, token_for, settings
):
    settings.MEDAI_GPU_STALE_AFTER = 60.0  # no staleness frame during the hold: it must stay silent
    monitor = Monitor(SimulatedProvider(), supervise=False)
    monitor.sample()
    with connect(_ws_url(live_medai, "/ws/gpu/"), subprotocols=["bearer", token_for(alice)]) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "gpu.status"
        _idle(ws, HOLD)
        monitor.pushed = None  # push even though nothing changed
        monitor.sample()
        update = json.loads(ws.recv(timeout=10))
        assert update["type"] == "gpu.update" and update["data"]["simulated"] is True
        assert update["data"]["stale"] is False
