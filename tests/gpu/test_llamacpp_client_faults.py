"""The real bundled llama.cpp server (SmolLM2, text only, 2,048 tokens per slot) asked, again and
again, for what it cannot do: image parts (it answers HTTP 500 "image input is not supported")
and prompts beyond its context (400 exceed_context_size_error). Each caller gets a 400 naming why,
the model's circuit stays closed and every other user's plain chats are answered."""

from __future__ import annotations

import json

import httpx
import pytest
from django.conf import settings

from apps.gpu import circuit, shared
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What does this X-ray show?"},
            {
                "type": "image_url",
                "image_url": {
                    "url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"
                    "AAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
                },
            },
        ],
    }
]
TOO_LONG = [{"role": "user", "content": "Summarise these notes: " + "blood pressure stable, " * 1500}]
PLAIN = [{"role": "user", "content": "Say OK."}]


def post(url: str, token: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


def stream(url: str, token: str, body: dict) -> tuple[int, str]:
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json={**body, "stream": True},
        timeout=120,
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        return response.status_code, response.read().decode()


def test_inputs_the_model_cannot_take_are_the_callers_400_and_never_shut_it_off_for_others(
    live_medai, llama_server, stub_backend, alice, bob, token_for, fresh_view
):
    model = register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", rank=1, agents=("Chat",))
    register_model("fallback", stub_backend, rank=2, agents=("Chat",), position=1)
    attacker, other = token_for(alice), token_for(bob)

    for i in range(settings.MEDAI_CIRCUIT_FAILURES + 2):
        if i % 2:
            status, text = stream(live_medai, attacker, {"model": "Chat", "messages": IMAGE, "max_tokens": 4})
            error = json.loads(text)["error"]
        else:
            response = post(live_medai, attacker, {"model": "Chat", "messages": IMAGE, "max_tokens": 4})
            status, error = response.status_code, response.json()["error"]
            assert "Retry-After" not in response.headers
        assert status == 400, error
        assert error["code"] == "unsupported_input" and "image input is not supported" in error["message"]

        response = post(live_medai, attacker, {"model": "Chat", "messages": TOO_LONG, "max_tokens": 4})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
        assert "context size" in error["message"]

        plain = post(live_medai, other, {"model": "Chat", "messages": PLAIN, "max_tokens": 4})
        assert plain.status_code == 200 and plain.json()["model"] == "smollm2-135m", plain.text

    assert circuit.state_of(model.pk) == (circuit.CLOSED, 0, 0.0)
    assert model.pk not in shared.view().health  # never marked down
    assert httpx.get(stub_backend.removesuffix("/v1") + "/_stats").json()["requests"] == 0  # no failover
    records_written()
    rejected = InferenceTask.objects.filter(status="failed")
    assert rejected.count() == 2 * (settings.MEDAI_CIRCUIT_FAILURES + 2)
    assert set(rejected.values_list("attempts", "http_status")) == {(1, 400)}  # never retried
