"""``POST /v1/embeddings`` with the official `openai` client, unchanged, and ``POST /v1/rerank``
over httpx, through medai in front of real llama.cpp servers on the bundled SmolLM2."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import openai
import pytest

from apps.audit import actions
from apps.audit.models import AuditEvent
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.support.openai_spec import assert_valid

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def embedder(llama_embed_server):
    return register_model(
        "smollm2-135m-embed",
        llama_embed_server,
        served="smollm2-135m-instruct",
        agents=("Retrieval",),
        supports_embeddings=True,
        rerank="embeddings",
    )


@pytest.fixture
def client(live_medai, embedder, alice, api_key_for):
    return openai.OpenAI(base_url=f"{live_medai}/v1", api_key=api_key_for(alice), max_retries=0, timeout=60)


def _cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_openai_client_embeds_a_list_as_floats(client):
    texts = ["fever and cough", "high temperature", "broken wrist"]
    answer = client.embeddings.create(model="smollm2-135m-embed", input=texts, encoding_format="float")
    assert answer.model == "smollm2-135m-embed" and answer.object == "list"
    assert [d.index for d in answer.data] == [0, 1, 2]
    dims = {len(d.embedding) for d in answer.data}
    assert dims == {576}  # SmolLM2-135M's hidden size
    assert answer.usage.prompt_tokens > 0 and answer.usage.total_tokens == answer.usage.prompt_tokens
    records_written()
    task = InferenceTask.objects.get()
    assert task.kind == "embeddings" and task.status == "completed"
    assert task.prompt_tokens == answer.usage.prompt_tokens and task.model_name == "smollm2-135m-embed"
    event = AuditEvent.objects.get(action=actions.INFERENCE)
    assert event.details["kind"] == "embeddings" and event.details["prompt_tokens"] == answer.usage.prompt_tokens


def test_openai_client_default_base64_decodes_to_the_same_vector(client, live_medai, api_key_for, alice):
    # The client asks for base64 unless told otherwise, and decodes it itself.
    default = client.embeddings.create(model="smollm2-135m-embed", input="chest pain")
    floats = client.embeddings.create(model="Retrieval", input="chest pain", encoding_format="float")
    assert len(default.data[0].embedding) == len(floats.data[0].embedding) == 576
    assert _cosine(default.data[0].embedding, floats.data[0].embedding) > 0.9999
    raw = httpx.post(
        f"{live_medai}/v1/embeddings",
        headers={"Authorization": f"Bearer {api_key_for(alice)}"},
        json={"model": "smollm2-135m-embed", "input": "chest pain", "encoding_format": "base64"},
        timeout=60,
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert len(packed) == 576 * 4
    assert struct.unpack("<576f", packed)[0] == pytest.approx(floats.data[0].embedding[0], rel=1e-5)


def test_token_arrays_are_embedded(client):
    answer = client.embeddings.create(model="smollm2-135m-embed", input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert len(answer.data) == 2 and all(len(d.embedding) == 576 for d in answer.data)


def test_a_chat_only_model_or_dimensions_on_llamacpp_is_a_400_naming_the_field(client, llama_embed_server):
    register_model("chat-only", llama_embed_server, served="smollm2-135m-instruct", agents=("Chat",))
    with pytest.raises(openai.BadRequestError) as chat_only:
        client.embeddings.create(model="chat-only", input="x")
    assert chat_only.value.body["param"] == "model" and "smollm2-135m-embed" in chat_only.value.message
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model="smollm2-135m-embed", input="x", dimensions=64)
    assert dims.value.body["param"] == "dimensions" and dims.value.code == "unsupported_parameter"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_a_text_longer_than_the_server_embeds_at_once_is_the_callers_400(client, embedder):
    """llama.cpp answers a 500 ("input (601 tokens) is too large to process"): medai tells the caller
    it is their input, names the field, and never counts it against the model server."""
    from apps.gpu import circuit

    for _ in range(6):  # past the circuit's threshold, were it counted
        with pytest.raises(openai.BadRequestError) as too_long:
            client.embeddings.create(model="smollm2-135m-embed", input=["short", "word " * 700])
        assert too_long.value.code == "context_length_exceeded" and too_long.value.body["param"] == "input"
        assert "smollm2-135m-embed" in too_long.value.message
    assert circuit.state_of(embedder.pk)[:2] == (circuit.CLOSED, 0)
    assert len(client.embeddings.create(model="smollm2-135m-embed", input="still serving").data) == 1
    records_written()
    assert InferenceTask.objects.filter(http_status=400, error_code="context_length_exceeded").count() == 6


def test_rerank_by_embeddings_on_the_embedded_default(live_medai, embedder, alice, api_key_for):
    docs = ["The patient has a broken wrist.", "Fever and a persistent cough.", "Invoice number 42."]
    answer = httpx.post(
        f"{live_medai}/v1/rerank",
        headers={"Authorization": f"Bearer {api_key_for(alice)}"},
        json={"model": "smollm2-135m-embed", "query": "fever and cough", "documents": docs, "top_n": 2},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "smollm2-135m-embed" and len(body["results"]) == 2
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    # the order is the cosine similarity of the same vectors /v1/embeddings answers (SmolLM2's
    # mean-pooled states are a weak semantic signal: the order is checked, not its quality)
    vectors = httpx.post(
        f"{live_medai}/v1/embeddings",
        headers={"Authorization": f"Bearer {api_key_for(alice)}"},
        json={"model": "smollm2-135m-embed", "input": ["fever and cough", *docs]},
        timeout=60,
    ).json()
    assert_valid("CreateEmbeddingResponse", vectors)  # the real server's answer, as medai relays it
    vectors = vectors["data"]
    by_cosine = sorted(
        range(3), key=lambda i: _cosine(vectors[0]["embedding"], vectors[i + 1]["embedding"]), reverse=True
    )
    assert [r["index"] for r in body["results"]] == by_cosine[:2]
    assert body["usage"]["total_tokens"] > 0
    records_written()
    assert InferenceTask.objects.filter(kind="rerank").count() == 1


def test_rerank_on_llamacpp_reranking_is_relayed(live_medai, llama_rerank_server, alice, api_key_for):
    register_model("reranker", llama_rerank_server, served="smollm2-135m-instruct", agents=(), rerank="native")
    docs = ["alpha", "beta", "gamma"]
    answer = httpx.post(
        f"{live_medai}/v1/rerank",
        headers={"Authorization": f"Bearer {api_key_for(alice)}"},
        json={"model": "reranker", "query": "alpha", "documents": docs, "return_documents": True},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert all(r["document"]["text"] == docs[r["index"]] for r in results)
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
