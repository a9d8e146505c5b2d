"""Embeddings and rerank, ``POST /v1/embeddings`` and ``POST /v1/rerank``, through the one pipeline
to a backend's ``/v1/embeddings`` and ``/v1/rerank`` (medai's stub here; the real llama.cpp server in
tests/e2e/test_openai_embeddings.py and tests/test_launcher.py): OpenAI's CreateEmbeddingResponse,
the record and its audit event, usage, quotas and rate limits as for chat, failover, and a 400
naming the field for what is malformed."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest

from apps.accounts.governance import quotas
from apps.audit.models import AuditEvent
from apps.inference.models import InferenceTask
from apps.inference.pipeline import steps
from bench.stub_backend import _vector
from tests.conftest import records_written, register_model
from tests.support.openai_spec import assert_valid
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

NOTE = "Mrs. Garcia, 72, chest pain radiating to the left arm"
DOWN = "http://127.0.0.1:9/v1"  # nothing listens: a server that is down


@pytest.fixture
def embedder(stub_backend):
    return register_model(
        "stub-e", stub_backend, served="served-e", agents=("Retrieval",), supports_embeddings=True, rerank="embeddings"
    )


@pytest.fixture
def post(live_medai, alice, token_for, embedder):
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def call(path, body, **kwargs):
        payload = {"json": body} if not isinstance(body, bytes) else {"content": body}
        response = httpx.post(
            f"{live_medai}/v1/{path}",
            headers={**headers, "Content-Type": "application/json", **kwargs.pop("headers", {})},
            timeout=30,
            **payload,
            **kwargs,
        )
        records_written()
        return response

    return call


def test_embeddings_answer_openais_shape_and_are_recorded_and_audited(post, stub_backend, alice):
    set_stub_mode(stub_backend, "ok", log=[])
    response = post("embeddings", {"model": "Retrieval", "input": [NOTE, "fever"], "encoding_format": "float"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid("CreateEmbeddingResponse", body)
    assert body["model"] == "stub-e" and [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in body["data"])
    assert body["usage"] == {"prompt_tokens": 11, "total_tokens": 11}  # the stub's word count
    assert httpx.get(stub_backend.removesuffix("/v1") + "/_stats").json()["log"] == [str([NOTE, "fever"])]
    assert "X-RateLimit-Limit" in response.headers and "X-RateLimit-Remaining" in response.headers
    task = InferenceTask.objects.get()
    assert (task.kind, task.mode, task.status, task.http_status) == ("embeddings", "sync", "completed", 200)
    assert (task.model_name, task.requested_model, task.user) == ("stub-e", "Retrieval", alice)
    assert (task.prompt_tokens, task.completion_tokens) == (11, 0)
    event = AuditEvent.objects.get(action="inference.complete")
    assert event.details["kind"] == "embeddings" and event.outcome == "success"
    assert event.actor_id == alice.pk and event.location == "demo"
    assert "Garcia" not in json.dumps(event.details)  # the input is PHI: never in the trail


def test_base64_is_the_little_endian_float32_bytes_of_the_same_vector(post):
    floats = post("embeddings", {"model": "stub-e", "input": "fever", "encoding_format": "float"}).json()
    packed = post("embeddings", {"model": "stub-e", "input": "fever", "encoding_format": "base64"}).json()
    vector = floats["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(vector)}f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector, rel=1e-6)
    # OpenAI's spec documents only floats; a base64 answer is that document with the string in place
    assert_valid("CreateEmbeddingResponse", {**packed, "data": [{**packed["data"][0], "embedding": vector}]})


@pytest.mark.parametrize("kind, asked", [("llamacpp", "base64"), ("vllm", "base64"), ("tgi", "float")])
def test_either_encoding_is_answered_from_what_each_kind_of_server_is_asked_for(
    post, stub_backend, monkeypatch, kind, asked
):
    """llama.cpp, vLLM and OpenAI servers are asked for base64 (no digits to parse or print), the
    others for floats; the caller gets the encoding it asked for, the same vector either way."""
    from apps.inference import backends

    register_model("stub-k", stub_backend, agents=(), kind=kind, supports_embeddings=True)
    sent: list[str] = []
    real = backends.post_json

    async def spy(endpoint, path, payload):
        sent.append(payload["encoding_format"])
        return await real(endpoint, path, payload)

    monkeypatch.setattr(backends, "post_json", spy)
    expected = _vector("fever")  # the stub's deterministic vector of the text
    floats = post("embeddings", {"model": "stub-k", "input": ["fever"], "encoding_format": "float"}).json()
    packed = post("embeddings", {"model": "stub-k", "input": ["fever"], "encoding_format": "base64"}).json()
    assert sent == [asked, asked]
    assert floats["data"][0]["embedding"] == pytest.approx(expected, rel=1e-6)
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert struct.unpack(f"<{len(expected)}f", raw) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "vectors",
    [
        [["x", 1]],
        ["not base64!"],
        ["AAA="],  # two bytes: no whole float32
        [[]],
        [[1e308, 10**400]],
        None,  # no vector at all
    ],
)
def test_a_malformed_embeddings_answer_is_a_502_never_a_500(post, stub_backend, vectors):
    data = [{"index": 0, "embedding": v} for v in vectors] if vectors else [{"index": 0}]
    set_stub_mode(stub_backend, "error", status=200, body={"data": data})
    response = post("embeddings", {"model": "stub-e", "input": ["a"]})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "backend_error"


@pytest.mark.parametrize(
    "model, answer",
    [
        ("stub-e", {"data": [{"index": None, "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}]}),
        ("stub-e", {"data": [{"index": 0, "embedding": [1.0]}]}),  # one vector for a query and a document
        ("stub-e", {"data": "x"}),
        ("stub-r", {"results": [{"index": 5, "relevance_score": 1.0}]}),  # no such document
        ("stub-r", {"results": [{"index": "first", "relevance_score": 1.0}]}),
        ("stub-r", {"results": {"index": 0}}),
    ],
)
def test_a_malformed_rerank_answer_is_a_502_never_a_500(post, stub_backend, model, answer):
    register_model("stub-r", stub_backend, agents=(), rerank="native")
    set_stub_mode(stub_backend, "error", status=200, body=answer)
    response = post("rerank", {"model": model, "query": "q", "documents": ["a"]})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "backend_error"


def test_an_embeddings_call_is_counted_in_usage(post, client_for, alice):
    assert post("embeddings", {"model": "stub-e", "input": ["one two", "three"]}).status_code == 200
    body = client_for(alice).get("/v1/usage?group_by=model").json()
    assert {r["model"]: (r["requests"], r["prompt_tokens"], r["total_tokens"]) for r in body["data"]} == {
        "stub-e": (1, 3, 3)
    }


def test_embeddings_and_rerank_hold_the_callers_quota(post, demo):
    quotas.set_quota(location="demo", period="day", requests=2)
    quotas.publish()
    assert post("embeddings", {"model": "stub-e", "input": "a"}).status_code == 200
    assert post("rerank", {"model": "stub-e", "query": "a", "documents": ["a", "b"]}).status_code == 200
    refused = post("embeddings", {"model": "stub-e", "input": "a"})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "quota_exceeded" and "Retry-After" in refused.headers
    assert "daily requests quota of location 'demo'" in refused.json()["error"]["message"]


def test_embeddings_take_from_the_callers_rate_limit(post, settings):
    settings.MEDAI_RATE_LIMIT_USER_RATE = 0.001
    settings.MEDAI_RATE_LIMIT_USER_BURST = 2
    answers = [post("embeddings", {"model": "stub-e", "input": "a"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == "rate_limit_exceeded" and "Retry-After" in answers[2].headers
    assert answers[0].headers["X-RateLimit-Limit"] == "2"


def test_rerank_by_embeddings_orders_the_documents_by_cosine(post, stub_backend):
    set_stub_mode(stub_backend, "ok", log=[])
    docs = ["broken wrist", "fever and cough", "fever"]
    response = post("rerank", {"model": "stub-e", "query": "fever", "documents": docs, "return_documents": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "rerank" and body["model"] == "stub-e" and body["id"].startswith("rerank-")
    results = body["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert [r["relevance_score"] for r in results] == sorted((r["relevance_score"] for r in results), reverse=True)
    assert results[0] == {"index": 2, "relevance_score": pytest.approx(1.0), "document": {"text": "fever"}}
    # one /embeddings call of the query and every document
    assert httpx.get(stub_backend.removesuffix("/v1") + "/_stats").json()["log"] == [str(["fever", *docs])]
    assert body["usage"]["total_tokens"] == 7
    task = InferenceTask.objects.get()
    assert (task.kind, task.status, task.prompt_tokens) == ("rerank", "completed", 7)
    assert AuditEvent.objects.get(action="inference.complete").details["kind"] == "rerank"


def test_rerank_on_a_native_reranker_is_relayed_best_first_with_top_n(post, stub_backend):
    register_model("stub-r", stub_backend, agents=(), rerank="native")
    docs = ["sepsis bundle", "fever", "fever fever"]
    response = post("rerank", {"model": "stub-r", "query": "fever", "documents": docs, "top_n": 2})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [1, 2]  # the stub scores 1/2 and 1/3: best first, two of them
    assert "document" not in results[0]


def test_rerank_fails_over_from_a_reranker_that_is_down_to_ranking_by_embeddings(post, embedder):
    register_model("reranker-down", DOWN, agents=("Retrieval",), position=0, rerank="native")
    response = post("rerank", {"model": "Retrieval", "query": "fever", "documents": ["cough", "fever"]})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "stub-e"
    assert response.json()["results"][0] == {"index": 1, "relevance_score": pytest.approx(1.0)}


def test_embeddings_fail_over_to_the_next_embedding_model(post, live_medai):
    register_model("embed-down", DOWN, agents=("Retrieval",), position=0, supports_embeddings=True)
    response = post("embeddings", {"model": "Retrieval", "input": "fever"})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "stub-e"


@pytest.mark.parametrize(
    "path, body, param, code",
    [
        ("embeddings", {"model": "stub-e"}, "input", "invalid_request"),
        ("embeddings", {"model": "stub-e", "input": ""}, "input", "invalid_request"),
        ("embeddings", {"model": "stub-e", "input": []}, "input", "invalid_request"),
        ("embeddings", {"model": "stub-e", "input": ["a", 3]}, "input[1]", "invalid_request"),
        ("embeddings", {"model": "stub-e", "input": [[1, -2]]}, "input[0][1]", "invalid_request"),
        ("embeddings", {"model": "stub-e", "input": ["a"] * 2049}, "input", "invalid_request"),
        ("embeddings", {"model": "stub-e", "input": "\ud800"}, "input", "invalid_value"),
        ("embeddings", {"model": "stub-e", "input": "a", "encoding_format": "int8"}, "encoding_format", None),
        ("embeddings", {"model": "stub-e", "input": "a", "dimensions": 0}, "dimensions", None),
        ("embeddings", {"model": "stub-e", "input": "a", "dimensions": True}, "dimensions", None),
        ("embeddings", {"model": "stub-e", "input": "a", "dimensions": 4}, "dimensions", "unsupported_parameter"),
        ("embeddings", {"model": "stub-e", "input": "a", "stream": True}, "stream", "unknown_parameter"),
        ("embeddings", {"input": "a"}, "model", None),
        ("rerank", {"model": "stub-e", "documents": ["a"]}, "query", None),
        ("rerank", {"model": "stub-e", "query": "q", "documents": []}, "documents", None),
        ("rerank", {"model": "stub-e", "query": "q", "documents": ["a", ""]}, "documents[1]", None),
        ("rerank", {"model": "stub-e", "query": "q", "documents": ["a"], "top_n": 0}, "top_n", None),
        (
            "rerank",
            {"model": "stub-e", "query": "q", "documents": ["a"], "return_documents": 1},
            "return_documents",
            None,
        ),
        ("rerank", {"model": "stub-e", "query": "q", "documents": "a"}, "documents", None),
    ],
)
def test_bad_input_is_a_400_naming_the_field(post, path, body, param, code):
    encoded = json.dumps(body, ensure_ascii=True).encode()  # a lone surrogate travels as its \\ud800 escape
    response = post(path, encoded)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if code:
        assert error["code"] == code
    assert error["message"].startswith(error["param"])
    assert not InferenceTask.objects.exists()  # refused before any backend: nothing recorded


def test_a_chat_only_model_is_a_400_naming_model_and_the_models_that_embed(post, stub_backend):
    register_model("chat-only", stub_backend)
    for path, body in (("embeddings", {"input": "a"}), ("rerank", {"query": "q", "documents": ["a"]})):
        response = post(path, {"model": "chat-only", **body})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("model", "model_not_supported") and "stub-e" in error["message"]
    assert post("embeddings", {"model": "nope", "input": "a"}).status_code == 404


def test_no_credentials_is_401_and_an_auditor_without_the_chat_scope_403(live_medai, embedder, audrey, token_for):
    url = f"{live_medai}/v1/embeddings"
    assert httpx.post(url, json={"model": "stub-e", "input": "a"}, timeout=10).status_code == 401
    auditor = {"Authorization": f"Bearer {token_for(audrey)}"}
    assert httpx.post(url, json={"model": "stub-e", "input": "a"}, headers=auditor, timeout=10).status_code == 403
    assert httpx.get(url, headers=auditor, timeout=10).status_code == 405


def test_a_backend_failure_is_a_503_recorded_as_failed_and_a_too_long_text_a_400(post, stub_backend):
    set_stub_mode(stub_backend, "error500")
    assert post("embeddings", {"model": "stub-e", "input": "a"}).status_code == 503
    assert InferenceTask.objects.get().status == "failed"
    too_large = {
        "error": {"code": 500, "message": "input (601 tokens) is too large to process.", "type": "server_error"}
    }
    set_stub_mode(stub_backend, "error", status=500, body=too_large)
    response = post("embeddings", {"model": "stub-e", "input": "a"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("input", "context_length_exceeded")
    assert error["message"].startswith("input: a text is longer than 'stub-e' embeds at once (2048 tokens")


@pytest.mark.parametrize(
    "path, body",
    [
        ("embeddings", {"model": "stub-e", "input": "a"}),
        ("rerank", {"model": "stub-e", "query": "q", "documents": ["a"]}),
    ],
)
def test_embeddings_and_rerank_pass_every_step_of_the_pipeline_in_order(post, path, body):
    seen: list[str] = []
    with steps.tracing(seen.append):
        assert post(path, body).status_code == 200
    assert [s for i, s in enumerate(seen) if s not in seen[:i]] == list(steps.STEPS)
