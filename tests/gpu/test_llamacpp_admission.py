"""Fifty clients at once against the real bundled llama.cpp server through medai over HTTP: the
model takes 4 at a time (the LOW row of the GPU policy), the rest wait their turn in its line,
and every one of them is answered 200."""

from __future__ import annotations

import threading

import httpx
import pytest

from apps.gpu import slots
from apps.gpu.policy import ModelInfo
from tests.conftest import records_written, register_model
from tests.gpu.conftest import publish_decision, reading

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

CLIENTS = 50


def test_fifty_concurrent_clients_are_all_answered(live_medai, llama_server, alice, token_for, fresh_view, settings):
    # One user's sync requests in flight are capped (MEDAI_INFLIGHT_PER_KEY, 32 by default: the
    # 33rd is a 429, tests/accounts/test_rate_limit_in_flight.py); here the line is the model's.
    settings.MEDAI_INFLIGHT_PER_KEY = CLIENTS
    model = register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct")
    # LOW pressure: 4 at a time, as the server's 4 slots. The wait is made long enough for a CI
    # runner whose two cores are shared (there a 4-token answer can take seconds): this test is
    # about waiting in line instead of 429, not about how fast the model is.
    publish_decision([reading(10)], [ModelInfo(model.pk, model.name, model.rank, 0, None)], wait_seconds=600)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    start = threading.Barrier(CLIENTS)
    statuses: list[int] = []
    most_waiting = [0]

    def client(i: int) -> None:
        with httpx.Client(timeout=600) as http:
            start.wait()
            response = http.post(
                f"{live_medai}/v1/chat/completions",
                headers=headers,
                json={
                    "model": "smollm2-135m",
                    "max_tokens": 4,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": f"Name one vital sign. ({i})"}],
                },
            )
            statuses.append(response.status_code)
            most_waiting[0] = max(most_waiting[0], slots.waiting(model.pk))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    records_written()
    assert statuses == [200] * CLIENTS, statuses
    assert most_waiting[0] > 0  # some did have to wait in line
