"""Responses match the OpenAPI document that /api/schema/ serves."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import PASSWORD, register_model
from tests.support.openai_spec import assert_valid, request_properties
from tests.support.openapi import assert_matches, openapi_document

pytestmark = pytest.mark.django_db(transaction=True)


def test_schema_and_docs_are_served():
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/v1/chat/completions" in schema.json()["paths"]
    docs = Client().get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content


def test_auth_and_model_responses_match_the_schema(alice):
    login = APIClient().post(
        "/v1/auth/login", {"username": "alice", "password": PASSWORD, "location_id": "demo"}, format="json"
    )
    assert_matches("/v1/auth/login", "post", 200, login.json())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login.json()['access_token']}")
    register_model("stub-a", "http://127.0.0.1:9/v1")
    assert_matches("/v1/auth/me", "get", 200, client.get("/v1/auth/me").json())
    assert_matches("/v1/models", "get", 200, client.get("/v1/models").json())
    assert_matches("/v1/models/{model_id}", "get", 200, client.get("/v1/models/stub-a").json())


def test_chat_completion_and_its_errors_match_the_schema(live_medai, stub_backend, alice, token_for):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    ok = httpx.post(
        f"{live_medai}/v1/chat/completions",
        headers=headers,
        json={"model": "stub-a", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert_matches("/v1/chat/completions", "post", 200, ok.json())
    bad = httpx.post(f"{live_medai}/v1/chat/completions", headers=headers, json={"model": "stub-a"})
    assert_matches("/v1/chat/completions", "post", 400, bad.json())
    anon = httpx.post(f"{live_medai}/v1/chat/completions", json={})
    assert_matches("/v1/chat/completions", "post", 401, anon.json())


def test_completion_and_its_errors_match_the_schema(live_medai, stub_backend, alice, token_for):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    ok = httpx.post(f"{live_medai}/v1/completions", headers=headers, json={"model": "stub-a", "prompt": ["a", "b"]})
    assert_matches("/v1/completions", "post", 200, ok.json())
    bad = httpx.post(f"{live_medai}/v1/completions", headers=headers, json={"model": "stub-a", "prompt": "a", "n": 3})
    assert_matches("/v1/completions", "post", 400, bad.json())
    missing = httpx.post(f"{live_medai}/v1/completions", headers=headers, json={"model": "nope", "prompt": "a"})
    assert_matches("/v1/completions", "post", 404, missing.json())
    assert_matches("/v1/completions", "post", 401, httpx.post(f"{live_medai}/v1/completions", json={}).json())
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    request = schema["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = schema["components"]["schemas"][request["$ref"].rsplit("/", 1)[1]]["properties"]
    assert {"prompt", "max_tokens", "stream", "stream_options", "agent_type", "priority"} <= set(fields)


def test_response_and_its_errors_match_the_schema(live_medai, stub_backend, alice, token_for):
    """``/v1/responses`` answers match medai's schema (and OpenAI's own Response: tests/support/openai_spec.py)."""
    from tests.support.openai_spec import assert_valid

    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    ok = httpx.post(f"{live_medai}/v1/responses", headers=headers, json={"model": "stub-a", "input": "hi"})
    assert_matches("/v1/responses", "post", 200, ok.json())
    assert_valid("Response", ok.json())
    rid = ok.json()["id"]
    got = httpx.get(f"{live_medai}/v1/responses/{rid}", headers=headers)
    assert_matches("/v1/responses/{response_id}", "get", 200, got.json())
    assert_valid("Response", got.json())
    bad = httpx.post(f"{live_medai}/v1/responses", headers=headers, json={"model": "stub-a", "input": 5})
    assert_matches("/v1/responses", "post", 400, bad.json())
    missing = httpx.post(f"{live_medai}/v1/responses", headers=headers, json={"model": "nope", "input": "a"})
    assert_matches("/v1/responses", "post", 404, missing.json())
    assert_matches("/v1/responses", "post", 401, httpx.post(f"{live_medai}/v1/responses", json={}).json())
    deleted = httpx.delete(f"{live_medai}/v1/responses/{rid}", headers=headers)
    assert_matches("/v1/responses/{response_id}", "delete", 200, deleted.json())
    gone = httpx.get(f"{live_medai}/v1/responses/{rid}", headers=headers)
    assert_matches("/v1/responses/{response_id}", "get", 404, gone.json())
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    request = schema["paths"]["/v1/responses"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = schema["components"]["schemas"][request["$ref"].rsplit("/", 1)[1]]["properties"]
    assert {"input", "instructions", "max_output_tokens", "tools", "previous_response_id", "store", "stream"} <= set(
        fields
    )


def test_embeddings_and_rerank_and_their_errors_match_the_schemas(live_medai, stub_backend, alice, token_for):
    """medai's own document, and OpenAI's CreateEmbeddingResponse (which knows floats only: the
    base64 answer is checked against medai's, whose ``embedding`` is floats or a string)."""
    register_model("stub-e", stub_backend, supports_embeddings=True, rerank="embeddings")
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    url = f"{live_medai}/v1/embeddings"
    for body in (
        {"model": "stub-e", "input": ["a", "b"], "encoding_format": "float"},
        {"model": "stub-e", "input": [[1, 2, 3]]},
        {"model": "stub-e", "input": "a", "encoding_format": "base64"},
    ):
        ok = httpx.post(url, headers=headers, json=body)
        assert ok.status_code == 200, ok.text
        assert_matches("/v1/embeddings", "post", 200, ok.json())
        if body.get("encoding_format") != "base64":
            assert_valid("CreateEmbeddingResponse", ok.json())
    bad = httpx.post(url, headers=headers, json={"model": "stub-e", "input": []})
    assert_matches("/v1/embeddings", "post", 400, bad.json())
    assert_valid("ErrorResponse", bad.json())
    assert_matches(
        "/v1/embeddings", "post", 404, httpx.post(url, headers=headers, json={"model": "x", "input": "a"}).json()
    )
    assert_matches("/v1/embeddings", "post", 401, httpx.post(url, json={}).json())
    rerank = f"{live_medai}/v1/rerank"
    ranked = httpx.post(rerank, headers=headers, json={"model": "stub-e", "query": "q", "documents": ["a", "q"]})
    assert_matches("/v1/rerank", "post", 200, ranked.json())
    assert_matches("/v1/rerank", "post", 400, httpx.post(rerank, headers=headers, json={"model": "stub-e"}).json())
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path, fields in (
        ("/v1/embeddings", {"model", "input", "encoding_format", "dimensions", "user"}),
        ("/v1/rerank", {"model", "query", "documents", "top_n", "return_documents"}),
    ):
        request = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert fields <= set(schema["components"]["schemas"][request["$ref"].rsplit("/", 1)[1]]["properties"])
    # every field OpenAI's request declares is documented (and validated) by medai
    assert request_properties("CreateEmbeddingRequest") <= set(
        schema["components"]["schemas"]["EmbeddingRequest"]["properties"]
    )


def test_async_task_api_responses_match_the_schema(client_for, alice, stub_backend):
    from apps.inference import queue
    from tests.inference.queue_helpers import ask

    register_model("stub-a", stub_backend)
    client = client_for(alice)
    submitted = ask(client, "Schema check")
    assert_matches("/v1/async/submit", "post", 202, submitted.json())
    task_id = submitted.json()["task_id"]
    assert_matches("/v1/async/status/{task_id}", "get", 200, client.get(f"/v1/async/status/{task_id}").json())
    assert_matches("/v1/async/result/{task_id}", "get", 409, client.get(f"/v1/async/result/{task_id}").json())
    assert queue.run_task(task_id) == "completed"
    assert_matches("/v1/async/result/{task_id}", "get", 200, client.get(f"/v1/async/result/{task_id}").json())
    assert_matches("/v1/async/cancel/{task_id}", "post", 409, client.post(f"/v1/async/cancel/{task_id}").json())

    batch = client.post(
        "/v1/async/submit-batch",
        {
            "requests": [
                {"agent_type": "Chat", "messages": [{"role": "user", "content": f"item {i}"}]} for i in range(3)
            ]
        },
        format="json",
    )
    assert_matches("/v1/async/submit-batch", "post", 202, batch.json())
    progress = client.get(f"/v1/async/batch-status/{batch.json()['batch_id']}")
    assert_matches("/v1/async/batch-status/{batch_id}", "get", 200, progress.json())
    assert_matches("/v1/async/tasks", "get", 200, client.get("/v1/async/tasks").json())
    assert_matches("/v1/async/health", "get", 200, client.get("/v1/async/health").json())
    bad = client.post("/v1/async/submit", {"agent_type": "Chat", "messages": []}, format="json")
    assert_matches("/v1/async/submit", "post", 400, bad.json())
    missing = client.get("/v1/async/status/00000000-0000-0000-0000-000000000000")
    assert_matches("/v1/async/status/{task_id}", "get", 404, missing.json())


def test_purged_and_failed_tasks_match_the_schema(client_for, alice, stub_backend):
    from apps.inference import queue
    from apps.inference.broker import PriorityBroker
    from apps.inference.models import InferenceTask, QueueEntry
    from tests.inference.queue_helpers import submit

    register_model("stub-a", stub_backend)
    client = client_for(alice)
    done, broken, waiting = submit(client, "answered"), submit(client, "breaks"), submit(client, "waits")
    assert queue.run_task(done, collate=False) == "completed"
    task = InferenceTask.objects.get(id=broken)
    task.request = {**task.request, "payload": {"messages": [{"role": "user", "content": "\ud800"}]}}
    task.save(update_fields=["request"])
    assert queue.run_task(broken, collate=False) == "failed"
    queue.expire_and_purge(InferenceTask.objects.get(id=done).result_expires_at)
    broker = PriorityBroker(list_key=queue.list_key())
    for entry in QueueEntry.objects.all():  # django-q2 acknowledges the deliveries of finished tasks
        broker.acknowledge(entry.pk)

    status = client.get(f"/v1/async/status/{done}").json()
    assert status["status"] == "completed" and status["content_purged_at"]
    assert_matches("/v1/async/status/{task_id}", "get", 200, status)
    purged = client.get(f"/v1/async/result/{done}")
    assert purged.status_code == 410
    assert_matches("/v1/async/result/{task_id}", "get", 410, purged.json())
    failed = client.get(f"/v1/async/result/{broken}")
    assert_matches("/v1/async/result/{task_id}", "get", failed.status_code, failed.json())
    page = client.get("/v1/async/tasks").json()
    assert {t["task_id"]: t["position"] for t in page["results"]}[waiting] == 1
    assert_matches("/v1/async/tasks", "get", 200, page)
    assert_matches("/v1/async/health", "get", 200, client.get("/v1/async/health").json())


def test_files_and_batch_responses_match_the_schema(client_for, alice, stub_backend):
    from tests.inference.batch_helpers import CHAT, jsonl, line, run_worker, upload

    register_model("stub-a", stub_backend)
    client = client_for(alice)
    uploaded = upload(client, jsonl(line("a"), line("b")))
    assert_matches("/v1/files", "post", 200, uploaded.json())
    file_id = uploaded.json()["id"]
    assert_matches("/v1/files", "post", 400, upload(client, b"{nope\n").json())
    assert_matches("/v1/files", "get", 200, client.get("/v1/files").json())
    assert_matches("/v1/files/{file_id}", "get", 200, client.get(f"/v1/files/{file_id}").json())
    assert_matches("/v1/files/{file_id}", "get", 404, client.get("/v1/files/file-nope").json())
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", "metadata": {"ward": "3B"}}
    created = client.post("/v1/batches", body, format="json")
    assert_matches("/v1/batches", "post", 200, created.json())
    batch_id = created.json()["id"]
    assert_matches("/v1/batches", "post", 400, client.post("/v1/batches", {}, format="json").json())
    assert_matches("/v1/batches/{batch_id}", "get", 200, client.get(f"/v1/batches/{batch_id}").json())
    run_worker()
    done = client.get(f"/v1/batches/{batch_id}").json()
    assert done["status"] == "completed"
    assert_matches("/v1/batches/{batch_id}", "get", 200, done)
    assert_matches("/v1/batches", "get", 200, client.get("/v1/batches").json())
    assert_matches("/v1/batches/{batch_id}/cancel", "post", 409, client.post(f"/v1/batches/{batch_id}/cancel").json())
    assert client.get(f"/v1/files/{done['output_file_id']}/content").status_code == 200
    assert_matches("/v1/files/{file_id}", "delete", 200, client.delete(f"/v1/files/{file_id}").json())
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    upload_body = schema["paths"]["/v1/files"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body
    assert "application/jsonl" in schema["paths"]["/v1/files/{file_id}/content"]["get"]["responses"]["200"]["content"]


def test_history_responses_match_the_schema(client_for, alice):
    from tests.inference.history_helpers import follow_up, stored_exchange

    first = stored_exchange(alice, "Schema check")
    follow_up(first, "And again?")
    client = client_for(alice)
    assert_matches("/v1/history", "get", 200, client.get("/v1/history").json())
    assert_matches("/v1/history", "get", 400, client.get("/v1/history?page=0").json())
    assert_matches("/v1/history", "get", 404, client.get("/v1/history?page=9").json())
    found = client.post("/v1/history/search", {"q": "schema"}, format="json")
    assert_matches("/v1/history/search", "post", 200, found.json())
    bad = client.post("/v1/history/search", {"q": ""}, format="json")
    assert_matches("/v1/history/search", "post", 400, bad.json())
    path = "/v1/conversations/{conversation_id}"
    assert_matches(path, "get", 200, client.get(f"/v1/conversations/{first.conversation_id}").json())
    missing = client.get("/v1/conversations/00000000-0000-4000-8000-000000000000")
    assert_matches(path, "get", 404, missing.json())


def test_feedback_responses_match_the_schema(client_for, alice):
    from tests.inference.history_helpers import stored_exchange

    exchange = str(stored_exchange(alice, "Schema check").id)
    client = client_for(alice)
    body = {"exchange_id": exchange, "rating": "down", "comment": "too short", "reasons": ["incomplete"]}
    assert_matches("/v1/feedback", "post", 201, client.post("/v1/feedback", body, format="json").json())
    assert_matches("/v1/feedback", "post", 200, client.post("/v1/feedback", body, format="json").json())
    bad = client.post("/v1/feedback", {**body, "rating": "sideways"}, format="json")
    assert_matches("/v1/feedback", "post", 400, bad.json())
    missing = client.post(
        "/v1/feedback", {**body, "exchange_id": "00000000-0000-4000-8000-000000000000"}, format="json"
    )
    assert_matches("/v1/feedback", "post", 404, missing.json())


def test_workflow_responses_match_the_schema(client_for, alice, stub_backend):
    from apps.inference.workflows import runs
    from tests.inference.batch_helpers import run_worker

    register_model("stub-a", stub_backend, agents=("Clinical", "Documentation", "Billing"))
    runs.ensure_discharge_summary()
    client = client_for(alice)
    assert_matches("/v1/workflows", "get", 200, client.get("/v1/workflows").json())
    path = "/v1/workflows/{name}/runs"
    created = client.post("/v1/workflows/discharge-summary/runs", {"document": "A note."}, format="json")
    assert_matches(path, "post", 202, created.json())
    assert_matches(path, "post", 400, client.post("/v1/workflows/discharge-summary/runs", {}, format="json").json())
    assert_matches(path, "post", 404, client.post("/v1/workflows/nope/runs", {"document": "x"}, format="json").json())
    run_id = created.json()["id"]
    detail = "/v1/workflows/runs/{run_id}"
    assert_matches(detail, "get", 200, client.get(f"/v1/workflows/runs/{run_id}").json())
    run_worker()
    done = client.get(f"/v1/workflows/runs/{run_id}").json()
    assert done["status"] == "completed"
    assert_matches(detail, "get", 200, done)
    assert_matches(detail, "get", 404, client.get("/v1/workflows/runs/nope").json())
    listed = client.get("/v1/workflows/runs?limit=1")
    assert listed.json()["data"][0]["id"] == run_id
    assert_matches("/v1/workflows/runs", "get", 200, listed.json())
    assert_matches("/v1/workflows/runs", "get", 400, client.get("/v1/workflows/runs?status=done").json())
    cancel = "/v1/workflows/runs/{run_id}/cancel"
    assert_matches(cancel, "post", 409, client.post(f"/v1/workflows/runs/{run_id}/cancel").json())
    other = client.post("/v1/workflows/discharge-summary/runs", {"document": "Another."}, format="json").json()
    assert_matches(cancel, "post", 200, client.post(f"/v1/workflows/runs/{other['id']}/cancel").json())


def test_feedback_export_responses_match_the_schema(client_for, audrey, alice):
    from tests.inference.history_helpers import stored_exchange

    exchange = str(stored_exchange(alice, "Schema check").id)
    client_for(alice).post("/v1/feedback", {"exchange_id": exchange, "rating": "up"}, format="json")
    client = client_for(audrey)
    ok = client.get("/v1/feedback/export")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("application/x-ndjson")
    content = openapi_document()["paths"]["/v1/feedback/export"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/x-ndjson", "text/csv"}
    assert_matches("/v1/feedback/export", "get", 400, client.get("/v1/feedback/export?limit=0").json())
    assert_matches("/v1/feedback/export", "get", 403, client_for(alice).get("/v1/feedback/export").json())
    assert_matches("/v1/feedback/export", "get", 401, APIClient().get("/v1/feedback/export").json())
