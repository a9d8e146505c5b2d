"""Retries, failover, circuit breaking and admission on the sync chat path, over real HTTP against
medai's failure stub (a real server will not answer 503 or hang on demand)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from apps.gpu import slots
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.gpu.conftest import publish_decision, reading
from tests.support.servers import set_stub_mode, start_stub

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "Dose of paracetamol for an adult?"}]


@pytest.fixture
def call(live_medai, alice, token_for, fresh_view):
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def post(body, **kwargs):
        response = httpx.post(
            f"{live_medai}/v1/chat/completions", json={"messages": MSG, **body}, headers=headers, timeout=30, **kwargs
        )
        records_written()  # written after the answer, in the background
        return response

    return post


@pytest.fixture
def broken():
    proc, url = start_stub("error503")
    yield url
    proc.stop()


def served(url: str) -> int:
    return httpx.get(url.removesuffix("/v1") + "/_stats").json()["requests"]


def test_a_503_fails_over_to_the_next_model_without_waiting_for_retries(call, broken, stub_backend):
    register_model("broken", broken, agents=("Clinical",), position=0)
    register_model("healthy", stub_backend, agents=("Clinical",), position=1)
    response = call({"model": "Clinical"})
    assert response.status_code == 200 and response.json()["model"] == "healthy"
    assert served(broken) == 1


def test_a_503_is_retried_three_times_then_answers_503_with_retry_after(call, broken):
    register_model("broken", broken)
    response = call({"model": "broken"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backend_unavailable"
    assert response.headers["Retry-After"]
    assert served(broken) == 4  # the first call and 3 retries
    assert InferenceTask.objects.get().attempts == 4


def test_a_retry_succeeds_when_the_backend_recovers(call, broken):
    register_model("flaky", broken)

    def recover() -> None:
        deadline = time.monotonic() + 10
        while served(broken) < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        set_stub_mode(broken, "ok")

    flipper = threading.Thread(target=recover)
    flipper.start()
    response = call({"model": "flaky"})
    flipper.join()
    assert response.status_code == 200, response.text
    assert served(broken) >= 2


def test_a_500_is_not_retried(call, stub_backend):
    register_model("crashy", stub_backend)
    set_stub_mode(stub_backend, "error500")
    assert call({"model": "crashy"}).status_code == 503
    assert served(stub_backend) == 1


def test_a_hanging_backend_times_out_is_marked_down_and_later_requests_skip_it(call, stub_backend, settings):
    settings.MEDAI_BACKEND_TIMEOUT = 1.0
    proc, hanging = start_stub("hang")
    try:
        register_model("stuck", hanging, agents=("Clinical",), position=0)
        register_model("healthy", stub_backend, agents=("Clinical",), position=1)
        first = call({"model": "Clinical"})
        assert first.status_code == 200 and first.json()["model"] == "healthy"
        second = call({"model": "Clinical"})
        assert second.status_code == 200 and second.json()["model"] == "healthy"
        assert served(hanging) == 1  # not asked again: marked down until a health check passes
        assert InferenceTask.objects.order_by("created_at").last().attempts == 1
    finally:
        proc.stop()


def test_five_failures_open_the_circuit_and_traffic_stops_reaching_the_backend(call, broken, stub_backend):
    # Different ranks: among equal ranks the healthy one's latency EMA would put it first anyway.
    register_model("broken", broken, rank=1, agents=("Clinical",), position=0)
    register_model("healthy", stub_backend, rank=2, agents=("Clinical",), position=1)
    for _ in range(7):
        assert call({"model": "Clinical"}).json()["model"] == "healthy"
    assert served(broken) == 5


def test_nothing_able_to_serve_is_a_clear_503(call, stub_backend):
    ep = register_model("huge", stub_backend)
    ep.vram_mb = 50_000
    ep.save()
    publish_decision([reading(99)], [_info(ep)])  # CRITICAL: only what fits in 100 MB free
    response = call({"model": "huge"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_backend_available" and "not allowed at GPU pressure CRITICAL" in error["message"]
    assert response.headers["Retry-After"] == "5"
    assert served(stub_backend) == 0


def test_under_critical_pressure_new_work_waits_then_503_but_critical_priority_runs(call, stub_backend):
    ep = register_model("tiny", stub_backend)
    publish_decision([reading(90)], [_info(ep)], wait_seconds=0.3)
    held = call({"model": "tiny", "priority": "normal"})
    assert held.status_code == 503 and held.json()["error"]["code"] == "gpu_overloaded"
    assert int(held.headers["Retry-After"]) >= 1
    urgent = call({"model": "tiny", "priority": "critical"})
    assert urgent.status_code == 200
    assert served(stub_backend) == 1


def test_a_model_at_its_concurrency_limit_answers_429_after_a_bounded_wait(call, stub_backend):
    ep = register_model("busy", stub_backend)
    set_stub_mode(stub_backend, "slow", delay=3)
    publish_decision([reading(75)], [_info(ep)], wait_seconds=0.3)  # HIGH: 1 in flight per model
    first: list[httpx.Response] = []
    t = threading.Thread(target=lambda: first.append(call({"model": "busy"})))
    t.start()
    deadline = time.monotonic() + 10
    while slots.in_flight(ep.pk) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = call({"model": "busy"})
    t.join()
    assert second.status_code == 429 and second.json()["error"]["code"] == "model_busy"
    assert second.headers["Retry-After"]
    assert first[0].status_code == 200
    slots.flush_releases()
    assert slots.in_flight(ep.pk) == 0  # released


async def test_a_stream_holds_its_slot_until_it_is_closed(stub_backend, fresh_view):
    from asgiref.sync import sync_to_async

    from apps.inference import router
    from apps.inference.pipeline.plan import ChatPlan
    from apps.inference.pipeline.run import open_chat_stream

    ep = await sync_to_async(register_model)("streamer", stub_backend)
    route = await sync_to_async(router.resolve)("streamer", None)
    plan = ChatPlan(
        principal=None,
        route=route,
        payload={"messages": MSG, "stream": True},
        stream=True,
        include_usage=False,
        priority=1,
        requested_model="streamer",
        correlation_id="t",
    )
    stream = await open_chat_stream(plan)
    assert slots.in_flight(ep.pk) == 1
    events = [e async for e in stream.events()]
    assert events[-1] is None  # [DONE] read: still held until closed
    assert slots.in_flight(ep.pk) == 1
    await stream.aclose()
    assert slots.in_flight(ep.pk) == 0


def _info(ep):
    from apps.gpu.policy import ModelInfo

    return ModelInfo(ep.pk, ep.name, ep.rank, ep.vram_mb, None)
