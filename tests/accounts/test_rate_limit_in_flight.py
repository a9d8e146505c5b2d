"""The in-flight cap per key: a key with its limit of requests running answers 429 until one ends;
the slot is freed when the request ends, whatever the ending: answered, streamed, or the client
gone mid-request."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from apps.accounts.models import ApiKey, ApiKeyLimit
from tests.conftest import register_model
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "Summarise the discharge letter."}]


def _stats(stub: str) -> dict:
    return httpx.get(stub.removesuffix("/v1") + "/_stats", timeout=5).json()


def _wait_in_flight(stub: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while _stats(stub)["in_flight"] < n:
        assert time.monotonic() < deadline, "the request never reached the backend"
        time.sleep(0.02)


@pytest.fixture
def one_at_a_time(alice, api_key_for, stub_backend):
    register_model("stub-a", stub_backend)
    secret = api_key_for(alice)
    ApiKeyLimit.objects.create(api_key=ApiKey.objects.for_secret(secret), max_in_flight=1)
    return {"Authorization": f"Bearer {secret}"}


def _post(url: str, headers: dict, **body: object) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json={"model": "stub-a", "messages": MSG, **body}, headers=headers, timeout=30
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_second_request_while_the_first_runs_is_refused_and_admitted_once_it_ended(
    live_medai, stub_backend, one_at_a_time, stream
):
    set_stub_mode(stub_backend, "hold")
    first: list[httpx.Response] = []
    runner = threading.Thread(target=lambda: first.append(_post(live_medai, one_at_a_time, stream=stream)))
    runner.start()
    _wait_in_flight(stub_backend, 1)
    refused = _post(live_medai, one_at_a_time, stream=stream)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_concurrent_requests"
    set_stub_mode(stub_backend, "ok")
    runner.join(30)
    assert first[0].status_code == 200
    assert _post(live_medai, one_at_a_time, stream=stream).status_code == 200


def _leave_early(url: str, headers: dict, stream: bool) -> int | None:
    """A request whose client gives up after 0.5 s: None if it was still waiting (admitted), else its status."""
    try:
        return httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "stub-a", "messages": MSG, "stream": stream},
            headers=headers,
            timeout=httpx.Timeout(30, read=0.5),
        ).status_code
    except httpx.ReadTimeout:
        return None


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_mid_request_frees_its_slot(live_medai, stub_backend, one_at_a_time, stream):
    set_stub_mode(stub_backend, "hang")  # the backend never answers: only the client's leaving ends a request
    assert _leave_early(live_medai, one_at_a_time, stream) is None
    deadline = time.monotonic() + 10
    while (status := _leave_early(live_medai, one_at_a_time, stream)) == 429:
        assert time.monotonic() < deadline, "the slot of the request whose client left was never freed"
        time.sleep(0.1)
    assert status is None  # admitted: it reached the hanging backend
    assert _stats(stub_backend)["requests"] >= 2
