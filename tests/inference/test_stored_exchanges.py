"""``store: true`` on chat completions keeps the exchange (apps/inference/conversations.py): on its
sync record, encrypted, in a conversation a follow-up continues, owned by the caller, until the
end of retention (a legal hold keeps it). Without ``store`` nothing of the content is kept. Against
the real llama.cpp server on the bundled model."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from apps.accounts.services import authenticate_header, issue_tokens
from apps.inference import conversations, retention
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Normal adult body temperature in Celsius?"


@pytest.fixture
def chat(live_medai, llama_server, token_for, alice, bob):
    register_model("smollm2", llama_server, agents=("MedicalQA",))
    tokens = {"alice": token_for(alice), "bob": token_for(bob)}

    def chat(body: dict, who: str = "alice") -> httpx.Response:
        body = {"model": "smollm2", "max_tokens": 16, **body}
        return httpx.post(
            f"{live_medai}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {tokens[who]}"},
            timeout=120,
        )

    return chat


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_without_store_nothing_of_the_content_is_kept(chat):
    response = chat({"messages": _user(QUESTION)})
    assert response.status_code == 200
    assert "X-Medai-Exchange-Id" not in response.headers
    records_written()
    task = InferenceTask.objects.get()
    assert (task.request, task.result, task.conversation_id, task.result_expires_at) == (None, None, None, None)


def test_a_stored_exchange_is_kept_encrypted_with_its_answer(chat):
    response = chat({"messages": _user(QUESTION), "store": True})
    assert response.status_code == 200, response.text
    exchange_id = response.headers["X-Medai-Exchange-Id"]
    records_written()
    task = InferenceTask.objects.get(id=exchange_id)
    assert str(task.conversation_id) == response.headers["X-Medai-Conversation-Id"]
    assert task.status == "completed" and task.result_expires_at is not None
    assert task.result["choices"][0]["message"]["content"] == response.json()["choices"][0]["message"]["content"]
    with connection.cursor() as cursor:  # at rest: neither the question nor the answer in clear
        cursor.execute(f"SELECT request, result FROM {InferenceTask._meta.db_table}")
        raw = " ".join(str(v) for row in cursor.fetchall() for v in row)
    assert "temperature" not in raw


def test_a_streamed_exchange_keeps_what_was_streamed(chat, live_medai, token_for, alice):
    with httpx.stream(
        "POST",
        f"{live_medai}/v1/chat/completions",
        json={"model": "smollm2", "max_tokens": 16, "stream": True, "store": True, "messages": _user(QUESTION)},
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        exchange_id = response.headers["X-Medai-Exchange-Id"]
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    streamed = "".join(
        (c.get("delta") or {}).get("content") or ""
        for line in lines[:-1]
        for c in json.loads(line.removeprefix("data: ")).get("choices") or ()
    )
    assert streamed
    task = InferenceTask.objects.get(id=exchange_id)  # recorded before [DONE]
    assert task.result["choices"][0]["message"]["content"] == streamed


def test_a_follow_up_continues_the_conversation_and_only_its_owner_may(chat):
    first = chat({"messages": _user(QUESTION), "store": True})
    conversation_id = first.headers["X-Medai-Conversation-Id"]
    answer = first.json()["choices"][0]["message"]["content"]
    follow = _user(QUESTION) + [{"role": "assistant", "content": answer}] + _user("And in Fahrenheit?")
    second = chat({"messages": follow, "store": True, "conversation_id": conversation_id})
    assert second.status_code == 200, second.text
    assert second.headers["X-Medai-Conversation-Id"] == conversation_id
    records_written()
    assert InferenceTask.objects.filter(conversation_id=conversation_id).count() == 2

    intruder = chat({"messages": follow, "store": True, "conversation_id": conversation_id}, who="bob")
    assert intruder.status_code == 404
    assert intruder.json()["error"]["code"] == "conversation_not_found"
    assert intruder.json()["error"]["param"] == "conversation_id"

    unstored = chat({"messages": follow, "conversation_id": conversation_id})
    assert unstored.status_code == 400 and unstored.json()["error"]["param"] == "conversation_id"


def test_retention_purges_a_stored_exchange_unless_a_legal_hold_covers_it(chat, alice):
    kept = chat({"messages": _user(QUESTION), "store": True}).headers["X-Medai-Exchange-Id"]
    gone = chat({"messages": _user(QUESTION), "store": True}).headers["X-Medai-Exchange-Id"]
    records_written()
    retention.place_hold(None, reason="case 42", task=InferenceTask.objects.get(id=kept))
    retention.purge(timezone.now() + timedelta(days=1))
    purged = InferenceTask.objects.get(id=gone)
    assert (purged.request, purged.result, purged.status) == (None, None, "completed")
    assert purged.content_purged_at is not None
    held = InferenceTask.objects.get(id=kept)
    assert held.request is not None and held.result is not None


def test_the_service_reads_back_the_owners_conversation_only(chat, alice, bob):
    response = chat({"messages": _user(QUESTION), "store": True})
    records_written()
    conversation_id = response.headers["X-Medai-Conversation-Id"]
    owner = authenticate_header("Bearer " + issue_tokens(alice, alice.locations.first()).access_token)
    other = authenticate_header("Bearer " + issue_tokens(bob, bob.locations.first()).access_token)
    [exchange] = conversations.conversation(owner, conversation_id)
    assert exchange.question == QUESTION and exchange.answer
    assert [e.id for e in conversations.search(owner, "body TEMPERATURE")] == [exchange.id]
    assert conversations.search(other, "temperature") == []
    with pytest.raises(ApiError):
        conversations.conversation(other, conversation_id)
    _, messages = conversations.continuation(owner, exchange.id)
    assert messages[-1] == {"role": "assistant", "content": exchange.answer}
