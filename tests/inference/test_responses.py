"""The Responses API, ``POST /v1/responses`` (not streamed), ``GET`` and ``DELETE
/v1/responses/{id}``, translated onto chat completions through the one pipeline (medai's stub
here; the official client on the real llama.cpp server in tests/e2e/test_openai_responses.py):
the Response's shape (OpenAI's own ``Response`` and medai's schema), what the backend is sent,
the record (``kind: "response"``) and its audit event, a stored response kept encrypted under
retention and legal holds and seen by its owner only, and a 400 naming the Responses field."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference import retention
from apps.inference.models import InferenceTask
from apps.inference.pipeline import steps
from tests.conftest import records_written, register_model
from tests.support.openai_spec import assert_valid
from tests.support.openapi import assert_matches
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Mrs. Garcia, 71, chest pain since noon: what first?"


@pytest.fixture
def api(live_medai, alice, token_for, stub_backend):
    """``api(method, path, body=None, user=alice)`` over real HTTP; the records written after each call."""
    register_model("stub-a", stub_backend, served="served-id", agents=("Chat", "MedicalQA"))
    tokens: dict[str, str] = {}

    def call(method, path, body=None, *, user=alice, raw: bytes | None = None):
        if user.username not in tokens:
            tokens[user.username] = token_for(user)
        headers = {"Authorization": f"Bearer {tokens[user.username]}"}
        if body is not None:  # JSON escapes: a lone surrogate travels as \\ud800
            raw = json.dumps(body).encode()
        if raw is not None:
            headers["Content-Type"] = "application/json"
        response = httpx.request(method, f"{live_medai}{path}", timeout=30, content=raw, headers=headers)
        records_written()
        return response

    return call


def bodies(stub_backend):
    return httpx.get(stub_backend.removesuffix("/v1") + "/_stats").json()["bodies"]


def create(api, **fields):
    response = api("POST", "/v1/responses", {"model": "stub-a", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_text_input_is_answered_as_a_response_and_recorded(api, stub_backend, alice):
    set_stub_mode(stub_backend, "ok", bodies=[])
    response = api(
        "POST",
        "/v1/responses",
        {
            "model": "MedicalQA",
            "input": QUESTION,
            "instructions": "Answer in one line.",
            "max_output_tokens": 32,
            "temperature": 0.2,
            "metadata": {"ward": "7b"},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid("Response", body)
    assert_matches("/v1/responses", "post", 200, body)
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["status"] == "completed"
    assert body["model"] == "stub-a" and body["instructions"] == "Answer in one line."
    assert (body["max_output_tokens"], body["temperature"], body["metadata"]) == (32, 0.2, {"ward": "7b"})
    [item] = body["output"]
    assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "completed")
    assert item["content"] == [{"type": "output_text", "text": "OK", "annotations": [], "logprobs": []}]
    assert body["usage"]["input_tokens"] == 5 and body["usage"]["output_tokens"] == 1
    assert body["usage"]["total_tokens"] == 6
    assert response.headers["X-RateLimit-Limit"]  # the rate-limit step ran
    [sent] = bodies(stub_backend)  # translated onto the backend's chat completions
    assert sent["model"] == "served-id"
    assert sent["messages"] == [
        {"role": "system", "content": "Answer in one line."},
        {"role": "user", "content": QUESTION},
    ]
    assert (sent["max_tokens"], sent["temperature"]) == (32, 0.2)
    task = InferenceTask.objects.get()
    assert body["id"] == f"resp_{task.id.hex}"  # the response is its record
    assert (task.kind, task.mode, task.status, task.http_status) == ("response", "sync", "completed", 200)
    assert (task.model_name, task.requested_model, task.user, task.agent_type) == (
        "stub-a",
        "MedicalQA",
        alice,
        "MedicalQA",
    )
    assert (task.prompt_tokens, task.completion_tokens) == (5, 1)
    assert task.request == {"messages": [{"role": "user", "content": QUESTION}]}  # without the instructions
    assert task.result == body
    assert task.result_expires_at > timezone.now()
    event = AuditEvent.objects.get(action="inference.complete")
    assert event.details["kind"] == "response" and event.outcome == "success"
    assert QUESTION not in json.dumps(event.details)


def test_the_stored_response_is_encrypted_at_rest(api):
    create(api, input=QUESTION)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(InferenceTask._meta.db_table)}")
        rows = repr(cursor.fetchall())
    assert "Garcia" not in rows and "chest pain" not in rows and '"OK"' not in rows


def test_input_items_are_sent_as_chat_messages(api, stub_backend):
    set_stub_mode(stub_backend, "ok", bodies=[])
    create(
        api,
        input=[
            {"role": "developer", "content": "Use SI units."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weight 70 kg."}]},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Noted.", "annotations": []}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Dose?"},
                    {"type": "input_image", "image_url": "https://example.org/chart.png", "detail": "low"},
                ],
            },
        ],
    )
    [sent] = bodies(stub_backend)
    assert sent["messages"] == [
        {"role": "developer", "content": "Use SI units."},
        {"role": "user", "content": "Weight 70 kg."},
        {"role": "assistant", "content": "Noted."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Dose?"},
                {"type": "image_url", "image_url": {"url": "https://example.org/chart.png", "detail": "low"}},
            ],
        },
    ]


def test_an_agent_routes_system_prompt_applies_without_instructions(api, stub_backend):
    from apps.inference import router
    from apps.inference.models import AgentRoute

    AgentRoute.objects.filter(agent_type="MedicalQA").update(system_prompt="You are a careful clinician.")
    router.invalidate()
    set_stub_mode(stub_backend, "ok", bodies=[])
    create(api, model="MedicalQA", input="hi")
    create(api, model="MedicalQA", input="hi", instructions="Be brief.")
    first, second = bodies(stub_backend)
    assert first["messages"][0] == {"role": "system", "content": "You are a careful clinician."}
    assert second["messages"][0] == {"role": "system", "content": "Be brief."}  # the caller's instead


def test_a_stop_at_max_output_tokens_is_an_incomplete_response(api, stub_backend):
    set_stub_mode(stub_backend, "ok", reply={"message": {"content": "Start with an E"}, "finish_reason": "length"})
    body = create(api, input=QUESTION, max_output_tokens=16)
    assert_valid("Response", body)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert body["output"][0]["content"][0]["text"] == "Start with an E"


def test_get_answers_the_stored_response_and_audits_the_read(api, alice):
    body = create(api, input=QUESTION)
    got = api("GET", f"/v1/responses/{body['id']}")
    assert got.status_code == 200, got.text
    assert got.json() == body
    assert_valid("Response", got.json())
    assert_matches("/v1/responses/{response_id}", "get", 200, got.json())
    event = AuditEvent.objects.get(action="inference.read_result")
    assert event.outcome == "success" and event.object_id == str(InferenceTask.objects.get().id)
    assert event.actor == "alice"


def test_store_false_keeps_no_content_and_cannot_be_read_back(api):
    body = create(api, input=QUESTION, store=False)
    assert body["store"] is False
    task = InferenceTask.objects.get()
    assert (task.request, task.result, task.result_expires_at) == (None, None, None)
    missing = api("GET", f"/v1/responses/{body['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"


def test_delete_purges_the_content_keeps_the_record_and_is_audited(api):
    body = create(api, input=QUESTION)
    deleted = api("DELETE", f"/v1/responses/{body['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": body["id"], "object": "response", "deleted": True}
    assert_matches("/v1/responses/{response_id}", "delete", 200, deleted.json())
    task = InferenceTask.objects.get()
    assert (task.request, task.result) == (None, None) and task.content_purged_at is not None
    assert (task.status, task.prompt_tokens) == ("completed", 5)  # the record of the request stays
    assert AuditEvent.objects.filter(action="inference.delete_response", outcome="success").count() == 1
    assert api("GET", f"/v1/responses/{body['id']}").status_code == 404
    assert api("DELETE", f"/v1/responses/{body['id']}").status_code == 404
    again = api("POST", "/v1/responses", {"model": "stub-a", "input": "and?", "previous_response_id": body["id"]})
    assert again.status_code == 404 and again.json()["error"]["param"] == "previous_response_id"


def test_a_deleted_response_under_legal_hold_is_hidden_and_kept_until_the_hold_ends(api, alice):
    body = create(api, input=QUESTION)
    hold = retention.place_hold(None, reason="case 42", user=alice)
    assert api("DELETE", f"/v1/responses/{body['id']}").status_code == 200
    assert api("GET", f"/v1/responses/{body['id']}").status_code == 404  # gone from the API at once
    task = InferenceTask.objects.get()
    assert task.result == body and task.content_purged_at is None  # kept for the hold
    assert retention.purge().purged == 0
    retention.release_hold(None, hold, reason="closed")
    assert retention.purge().purged == 1
    task.refresh_from_db()
    assert (task.request, task.result) == (None, None) and task.content_purged_at is not None


def test_retention_purges_a_stored_response(api, settings):
    body = create(api, input=QUESTION)
    assert retention.purge().purged == 0
    later = timezone.now() + timedelta(seconds=settings.MEDAI_RESULT_TTL + 1)
    assert retention.purge(later).purged == 1
    task = InferenceTask.objects.get()
    assert (task.request, task.result, task.status) == (None, None, "completed")
    assert api("GET", f"/v1/responses/{body['id']}").status_code == 404


def test_a_response_past_its_retention_is_not_found_before_the_sweep(api):
    body = create(api, input=QUESTION)
    InferenceTask.objects.update(result_expires_at=timezone.now() - timedelta(seconds=1))
    assert api("GET", f"/v1/responses/{body['id']}").status_code == 404
    follow = api("POST", "/v1/responses", {"model": "stub-a", "input": "and?", "previous_response_id": body["id"]})
    assert follow.status_code == 404


def test_anyone_elses_response_is_a_404_like_an_id_that_exists_nowhere(api, bob, charlie):
    body = create(api, input=QUESTION)
    fake = "resp_" + "0" * 32
    for user in (bob, charlie):
        for method in ("GET", "DELETE"):
            theirs = api(method, f"/v1/responses/{body['id']}", user=user)
            nowhere = api(method, f"/v1/responses/{fake}", user=user)
            assert theirs.status_code == 404, (user, method, theirs.text)
            assert theirs.text.replace(body["id"], fake) == nowhere.text
        follow = api(
            "POST", "/v1/responses", {"model": "stub-a", "input": "x", "previous_response_id": body["id"]}, user=user
        )
        assert follow.status_code == 404 and follow.json()["error"]["param"] == "previous_response_id"
    assert InferenceTask.objects.get(kind="response").result is not None  # alice's is untouched
    assert api("GET", f"/v1/responses/{body['id']}").status_code == 200


def test_odd_ids_are_404(api):
    for rid in ("resp_nothex", "chatcmpl-1", "x" * 300, "resp_" + "0" * 31, "%00", "..%2f", "resp_%ED%A0%80"):
        for method in ("GET", "DELETE"):
            response = api(method, f"/v1/responses/{rid}")
            assert response.status_code == 404, (rid, response.text)
            assert response.json()["error"]["type"] == "not_found_error"


def test_get_with_include_is_a_400_naming_it(api):
    body = create(api, input=QUESTION)
    response = api("GET", f"/v1/responses/{body['id']}?include=message.output_text.logprobs")
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == ("include", "unsupported_parameter")


def test_a_read_only_key_reads_but_does_not_delete(api, live_medai, alice, api_key_for):
    body = create(api, input=QUESTION)
    headers = {"Authorization": f"Bearer {api_key_for(alice, scopes=['read'])}"}
    assert httpx.get(f"{live_medai}/v1/responses/{body['id']}", headers=headers).status_code == 200
    assert httpx.delete(f"{live_medai}/v1/responses/{body['id']}", headers=headers).status_code == 403
    assert httpx.post(f"{live_medai}/v1/responses", json={"input": "x"}, headers=headers).status_code == 403
    assert InferenceTask.objects.get().result is not None


LONG = "x" * 300


BAD = [
    ({}, "input", "invalid_value"),
    ({"input": None}, "input", "invalid_value"),
    ({"input": 5}, "input", "invalid_value"),
    ({"input": []}, "input", "invalid_value"),
    ({"input": [5]}, "input[0]", "invalid_value"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"input": [{"role": "user"}]}, "input[0].content", "invalid_value"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_value"),
    ({"input": [{"role": "user", "content": "x", "name": "a"}]}, "input[0].name", "unknown_parameter"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        "input[0].content[0].text",
        "invalid_value",
    ),
    (
        {
            "input": [
                {"role": "user", "content": [{"type": "output_text", "text": "x"}]},
                {"role": "user", "content": [{"type": "input_file", "file_id": "f"}]},
            ]
        },
        "input[1].content[0].type",
        "unsupported_parameter",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
        "input[0].content[0].image_url",
        "unsupported_parameter",
    ),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type", "unsupported_parameter"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "unsupported_parameter"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments", "invalid_value"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "invalid_value"),
    ({"input": [{"role": "user", "content": "\ud800"}]}, "input[0].content", "invalid_value"),
    ({"input": "x", "instructions": 5}, "instructions", "invalid_value"),
    ({"input": "x", "max_output_tokens": 15}, "max_output_tokens", "invalid_value"),
    ({"input": "x", "max_output_tokens": "32"}, "max_output_tokens", "invalid_value"),
    ({"input": "x", "max_output_tokens": True}, "max_output_tokens", "invalid_value"),
    ({"input": "x", "temperature": 3}, "temperature", "invalid_request"),
    ({"input": "x", "top_p": -1}, "top_p", "invalid_request"),
    ({"input": "x", "store": "yes"}, "store", "invalid_value"),
    ({"input": "x", "stream": 1}, "stream", "invalid_value"),
    ({"input": "x", "previous_response_id": 5}, "previous_response_id", "invalid_value"),
    ({"input": "x", "previous_response_id": "resp_" + "0" * 32}, "previous_response_id", "response_not_found"),
    ({"input": "x", "metadata": {"k": 5}}, "metadata.k", "invalid_value"),
    ({"input": "x", "metadata": {"k": "\ud800"}}, "metadata.k", "invalid_value"),
    ({"input": "x", "instructions": "\ud800"}, "instructions", "invalid_value"),
    ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.name", "invalid_request"),
    (
        {"input": "x", "text": {"format": {"type": "json_schema", "name": "n", "schema": 5}}},
        "text.format.schema",
        "invalid_request",
    ),
    ({"input": "x", "metadata": [1]}, "metadata", "invalid_value"),
    ({"input": "x", "metadata": {LONG: "v"}}, "metadata", "invalid_value"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
    ({"input": "x", "text": {"verbosity": "low"}}, "text.verbosity", "unsupported_parameter"),
    ({"input": "x", "background": True}, "background", "unsupported_parameter"),
    ({"input": "x", "conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"input": "x", "reasoning": {"effort": "high"}}, "reasoning", "unsupported_parameter"),
    ({"input": "x", "include": ["reasoning.encrypted_content"]}, "include", "unsupported_parameter"),
    ({"input": "x", "truncation": "auto"}, "truncation", "unsupported_parameter"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
    ({"input": "x", "service_tier": "flex"}, "service_tier", "unsupported_parameter"),
    ({"input": "x", "messages": []}, "messages", "unknown_parameter"),
    ({"input": "x", "max_tokens": 5}, "max_tokens", "unknown_parameter"),
    ({"input": "x", "stream_options": {"include_obfuscation": False}}, "stream_options", "invalid_value"),
    ({"input": "x", "priority": "urgent"}, "priority", "invalid_request"),
]


def test_bad_input_is_a_400_naming_the_field(api):
    for body, param, code in BAD:  # one server for them all
        response = api("POST", "/v1/responses", {"model": "stub-a", **body})
        status = 404 if code == "response_not_found" else 400
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, code), (body, error)
        if status == 400:
            assert error["type"] == "invalid_request_error"
            assert_matches("/v1/responses", "post", 400, response.json())
    assert not InferenceTask.objects.exists()


def test_a_body_that_is_not_a_json_object_is_a_400(api):
    for raw in (b"", b"[]", b"{", b'{"input": NaN}', b'{"input": "\\ud800"}', b"\xff"):
        response = api("POST", "/v1/responses", raw=raw)
        assert response.status_code == 400, (raw, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_values_that_ask_for_nothing_are_accepted(api):
    body = create(
        api,
        input="x",
        background=False,
        include=[],
        truncation="disabled",
        reasoning={"effort": None},
        top_logprobs=0,
        service_tier="auto",
        text={"format": {"type": "text"}},
        tool_choice="auto",
        parallel_tool_calls=True,
    )
    assert body["status"] == "completed"


def test_unknown_model_is_404_and_no_credentials_401(api, live_medai):
    response = api("POST", "/v1/responses", {"model": "no-such-model", "input": "x"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    anon = httpx.post(f"{live_medai}/v1/responses", json={"model": "stub-a", "input": "x"})
    assert anon.status_code == 401
    assert_matches("/v1/responses", "post", 401, anon.json())
    assert httpx.get(f"{live_medai}/v1/responses/resp_{'0' * 32}").status_code == 401
    assert httpx.delete(f"{live_medai}/v1/responses/resp_{'0' * 32}").status_code == 401


def test_backend_failure_is_a_503_recorded_as_failed_and_not_stored(api, stub_backend):
    set_stub_mode(stub_backend, "error500")
    response = api("POST", "/v1/responses", {"model": "stub-a", "input": QUESTION})
    assert response.status_code == 503, response.text
    task = InferenceTask.objects.get()
    assert (task.kind, task.status, task.request, task.result) == ("response", "failed", None, None)


def test_a_backend_rejection_is_the_callers_400(api, stub_backend):
    set_stub_mode(stub_backend, "reject400")
    response = api("POST", "/v1/responses", {"model": "stub-a", "input": QUESTION})
    assert response.status_code == 400, response.text


def test_responses_pass_every_step_of_the_pipeline_in_order(api):
    seen: list[str] = []
    with steps.tracing(seen.append):
        assert api("POST", "/v1/responses", {"model": "stub-a", "input": QUESTION}).status_code == 200
    assert [s for i, s in enumerate(seen) if s not in seen[:i]] == list(steps.STEPS)


def test_a_quota_applies_to_responses(api, demo):
    from apps.accounts.models import Quota

    Quota.objects.create(location=demo, period=Quota.Period.DAY, max_requests=1)
    assert api("POST", "/v1/responses", {"model": "stub-a", "input": "one"}).status_code == 200
    over = api("POST", "/v1/responses", {"model": "stub-a", "input": "two"})
    assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
    assert over.headers["Retry-After"]
