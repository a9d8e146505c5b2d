"""(Legacy) completions, ``POST /v1/completions``, through the one pipeline to a backend's
``/v1/completions`` (medai's stub here; the real llama.cpp server in tests/e2e/test_openai_completions.py):
the answer's shape (OpenAI's CreateCompletionResponse), several prompts, streaming, the record
and its audit event, quotas, and a 400 naming the field for what medai cannot forward."""

from __future__ import annotations

import json

import httpx
import pytest

from apps.audit.models import AuditEvent
from apps.inference.models import InferenceTask
from apps.inference.pipeline import steps
from tests.conftest import records_written, register_model
from tests.support.openai_spec import assert_valid
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "The normal adult resting heart rate is"


@pytest.fixture
def call(live_medai, alice, token_for, stub_backend):
    register_model("stub-a", stub_backend, served="served-id", agents=("MedicalQA",))
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def post(body, **kwargs):
        payload = {"content": body, "headers": {**headers, "Content-Type": "application/json"}}
        if not isinstance(body, bytes):
            payload = {"json": body, "headers": headers}
        response = httpx.post(f"{live_medai}/v1/completions", timeout=30, **payload, **kwargs)
        records_written()
        return response

    return post


def test_completion_is_relayed_as_a_text_completion_and_recorded(call, stub_backend, alice):
    set_stub_mode(stub_backend, "ok", log=[])
    response = call({"model": "MedicalQA", "prompt": PROMPT, "max_tokens": 4, "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid("CreateCompletionResponse", body)
    assert body["object"] == "text_completion" and body["model"] == "stub-a" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"text": "OK", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert httpx.get(stub_backend.removesuffix("/v1") + "/_stats").json()["log"] == [
        PROMPT
    ]  # the backend's /v1/completions
    task = InferenceTask.objects.get()
    assert (task.kind, task.mode, task.status, task.http_status) == ("completions", "sync", "completed", 200)
    assert (task.model_name, task.requested_model, task.user) == ("stub-a", "MedicalQA", alice)
    assert (task.prompt_tokens, task.completion_tokens) == (4, 2)
    event = AuditEvent.objects.get(action="inference.complete")
    assert event.details["kind"] == "completions" and event.outcome == "success"
    assert PROMPT not in json.dumps(event.details)


def test_each_prompt_of_a_list_is_a_choice_in_order_with_the_usage_of_all(call, stub_backend):
    set_stub_mode(stub_backend, "ok", log=[])
    response = call({"model": "stub-a", "prompt": ["first", "second", "third"], "max_tokens": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid("CreateCompletionResponse", body)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    assert sorted(httpx.get(stub_backend.removesuffix("/v1") + "/_stats").json()["log"]) == ["first", "second", "third"]
    task = InferenceTask.objects.get()  # one request, one record
    assert (task.prompt_tokens, task.completion_tokens) == (12, 6)


def test_stream_relays_text_completion_chunks_and_ends_with_done(live_medai, call, alice, token_for):
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    body = {"model": "stub-a", "prompt": PROMPT, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{live_medai}/v1/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "OK"
    assert {c["object"] for c in chunks} == {"text_completion"} and {c["model"] for c in chunks} == {"stub-a"}
    assert len({c["id"] for c in chunks}) == 1
    for chunk in chunks[:-1]:  # OpenAI streams finish_reason null until the last chunk
        assert chunk["choices"][0]["finish_reason"] is None
        assert_valid(
            "CreateCompletionResponse", {**chunk, "choices": [{**chunk["choices"][0], "finish_reason": "stop"}]}
        )
    assert_valid("CreateCompletionResponse", chunks[-1])
    assert chunks[-1]["usage"]["total_tokens"] == 6
    records_written()  # a stream's record: by the background writer after [DONE]
    task = InferenceTask.objects.get()
    assert (task.kind, task.stream, task.status, task.completion_tokens) == ("completions", True, "completed", 2)


def test_stream_without_include_usage_sends_no_usage(live_medai, call, alice, token_for):
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    with httpx.stream(
        "POST",
        f"{live_medai}/v1/completions",
        json={"model": "stub-a", "prompt": PROMPT, "stream": True},
        headers=headers,
    ) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line and line != "data: [DONE]"]
    assert chunks and not any("usage" in c for c in chunks)
    records_written()  # a stream's record: by the background writer after [DONE]
    assert InferenceTask.objects.get().completion_tokens == 2  # recorded with the real usage all the same


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "stub-a"}, "prompt", "invalid_request"),
        ({"model": "stub-a", "prompt": ""}, "prompt", "invalid_request"),
        ({"model": "stub-a", "prompt": []}, "prompt", "invalid_request"),
        ({"model": "stub-a", "prompt": ["ok", 3]}, "prompt[1]", "unsupported_parameter"),
        ({"model": "stub-a", "prompt": [[1, 2]]}, "prompt[0]", "unsupported_parameter"),
        ({"model": "stub-a", "prompt": ["ok", ""]}, "prompt[1]", "invalid_request"),
        ({"model": "stub-a", "prompt": ["a"] * 17}, "prompt", "invalid_request"),
        ({"model": "stub-a", "prompt": ["a", "b"], "stream": True}, "prompt", "unsupported_parameter"),
        ({"model": "stub-a", "prompt": "x", "n": 2}, "n", "unsupported_parameter"),
        ({"model": "stub-a", "prompt": "x", "best_of": 3}, "best_of", "unsupported_parameter"),
        ({"model": "stub-a", "prompt": "x", "echo": True}, "echo", "unsupported_parameter"),
        ({"model": "stub-a", "prompt": "x", "logprobs": 2}, "logprobs", "unsupported_parameter"),
        ({"model": "stub-a", "prompt": "x", "suffix": "end"}, "suffix", "unsupported_parameter"),
        ({"model": "stub-a", "prompt": "x", "messages": []}, "messages", "unknown_parameter"),
        ({"model": "stub-a", "prompt": "x", "temperature": 3}, "temperature", "invalid_request"),
        ({"model": "stub-a", "prompt": "x", "top_p": -1}, "top_p", "invalid_request"),
        ({"model": "stub-a", "prompt": "x", "max_tokens": 0}, "max_tokens", "invalid_request"),
        ({"model": "stub-a", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_request"),
        (
            {"model": "stub-a", "prompt": "x", "stream_options": {"include_usage": True}},
            "stream_options",
            "invalid_request",
        ),
        (b'{"model": "stub-a", "prompt": "\\ud800"}', "prompt", "invalid_value"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(call, body, param, code):
    response = call(body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert error["type"] == "invalid_request_error"
    assert not InferenceTask.objects.exists()


def test_values_that_ask_for_nothing_are_accepted(call):
    body = {"model": "stub-a", "prompt": ["x"], "n": 1, "best_of": 1, "echo": False, "logprobs": None, "suffix": None}
    assert call(body).status_code == 200


def test_unknown_model_is_404_and_no_credentials_401(call, live_medai):
    response = call({"model": "no-such-model", "prompt": "x"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert httpx.post(f"{live_medai}/v1/completions", json={"model": "stub-a", "prompt": "x"}).status_code == 401
    assert httpx.get(f"{live_medai}/v1/completions").status_code in (401, 405)


def test_backend_failure_is_a_503_recorded_as_failed(call, stub_backend):
    set_stub_mode(stub_backend, "error500")
    response = call({"model": "stub-a", "prompt": PROMPT})
    assert response.status_code == 503, response.text
    assert InferenceTask.objects.get().status == "failed"


def test_completions_pass_every_step_of_the_pipeline_in_order(call):
    seen: list[str] = []
    with steps.tracing(seen.append):
        assert call({"model": "stub-a", "prompt": PROMPT}).status_code == 200
    assert [s for i, s in enumerate(seen) if s not in seen[:i]] == list(steps.STEPS)
