"""Chat completions through medai to an OpenAI-compatible backend (medai's stub): relaying,
model naming, recording, streaming, failover and backend errors."""

from __future__ import annotations

import json

import httpx
import pytest

from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.support.servers import free_port, set_stub_mode, start_stub

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "What is the normal adult resting heart rate?"}]


@pytest.fixture
def call(live_medai, alice, token_for):
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def post(body):
        response = httpx.post(f"{live_medai}/v1/chat/completions", json=body, headers=headers, timeout=30)
        records_written()  # written after the answer, in the background
        return response

    return post


def test_completion_is_relayed_under_medais_model_name_and_recorded(call, stub_backend, alice):
    register_model("stub-a", stub_backend, served="served-id", agents=("MedicalQA",))
    response = call({"model": "MedicalQA", "messages": MSG, "max_tokens": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "stub-a"
    assert body["choices"][0]["message"]["content"] == "OK"
    task = InferenceTask.objects.get()
    assert (task.mode, task.status, task.http_status) == ("sync", "completed", 200)
    assert task.user == alice and task.location.code == "demo"
    assert (task.model_name, task.agent_type, task.requested_model) == ("stub-a", "MedicalQA", "MedicalQA")
    assert (task.prompt_tokens, task.completion_tokens) == (5, 1)
    assert task.latency_ms is not None and task.request is None and task.result is None  # no PHI kept
    assert response.headers["X-Request-ID"] == task.correlation_id


def test_agent_type_field_routes_and_system_prompt_is_added(call, stub_backend):
    register_model("stub-a", stub_backend, agents=("Billing",))
    response = call({"model": "anything-ignored", "agent_type": "billing", "messages": MSG})
    assert response.status_code == 404  # 'anything-ignored' is neither a model nor the agent type
    response = call({"model": "Billing", "agent_type": "Billing", "messages": MSG})
    assert response.status_code == 200
    assert InferenceTask.objects.filter(status="completed").get().agent_type == "Billing"


def test_stream_relays_chunks_and_ends_with_done(call, live_medai, stub_backend, alice, token_for):
    register_model("stub-a", stub_backend)
    with httpx.stream(
        "POST",
        f"{live_medai}/v1/chat/completions",
        json={"model": "stub-a", "messages": MSG, "stream": True},
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "OK"
    assert all(c["model"] == "stub-a" for c in chunks)
    assert not any("usage" in c for c in chunks)  # not asked for by the client
    records_written()  # a stream's record: by the background writer after [DONE]
    task = InferenceTask.objects.get()
    assert task.stream and task.status == "completed" and task.completion_tokens == 2


def test_stream_include_usage_is_passed_through(live_medai, stub_backend, alice, token_for):
    register_model("stub-a", stub_backend)
    with httpx.stream(
        "POST",
        f"{live_medai}/v1/chat/completions",
        json={"model": "stub-a", "messages": MSG, "stream": True, "stream_options": {"include_usage": True}},
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    usage_chunks = [json.loads(line[6:]) for line in lines[:-1] if '"usage"' in line]
    assert usage_chunks and usage_chunks[-1]["usage"]["completion_tokens"] == 2


def test_failover_to_the_next_model_when_the_first_answers_503(call, stub_backend):
    proc, broken = start_stub("error503")
    try:
        register_model("broken", broken, agents=("Clinical",), position=0)
        register_model("healthy", stub_backend, agents=("Clinical",), position=1)
        response = call({"model": "Clinical", "messages": MSG})
        assert response.status_code == 200
        assert response.json()["model"] == "healthy"
        task = InferenceTask.objects.get()
        assert task.attempts == 2 and task.model_name == "healthy"
    finally:
        proc.stop()


def test_failover_when_the_first_model_server_is_down(call, stub_backend):
    register_model("gone", f"http://127.0.0.1:{free_port()}/v1", agents=("Clinical",), position=0)
    register_model("healthy", stub_backend, agents=("Clinical",), position=1)
    response = call({"model": "Clinical", "messages": MSG})
    assert response.status_code == 200 and response.json()["model"] == "healthy"


def test_backend_rejection_is_400_and_not_retried_elsewhere(call, stub_backend):
    proc, rejecting = start_stub("reject400")
    try:
        register_model("picky", rejecting, agents=("Clinical",), position=0)
        register_model("healthy", stub_backend, agents=("Clinical",), position=1)
        response = call({"model": "Clinical", "messages": MSG})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"
        assert "too long" in response.json()["error"]["message"]
        task = InferenceTask.objects.get()
        assert (task.status, task.http_status, task.error_code) == ("failed", 400, "context_length_exceeded")
    finally:
        proc.stop()


def test_hanging_backend_times_out_into_503(call, stub_backend, settings):
    settings.MEDAI_BACKEND_TIMEOUT = 1.0
    register_model("stuck", stub_backend)
    set_stub_mode(stub_backend, "hang")
    response = call({"model": "stuck", "messages": MSG})
    assert response.status_code == 503
    assert "timed out" in response.json()["error"]["message"]
    assert InferenceTask.objects.get().status == "failed"


def test_models_list_shows_enabled_models_and_agent_types(live_medai, stub_backend, alice, token_for):
    register_model("stub-a", stub_backend, agents=("Chat",))
    register_model("off", stub_backend, agents=(), enabled=False)
    response = httpx.get(f"{live_medai}/v1/models", headers={"Authorization": f"Bearer {token_for(alice)}"})
    ids = [m["id"] for m in response.json()["data"]]
    assert "stub-a" in ids and "Chat" in ids and "off" not in ids
    assert "Billing" not in ids  # an agent type with no model cannot answer
